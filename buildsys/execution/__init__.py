"""Execution: running one prepared action in a worker process under the determinism
contract, behind the executor seam."""
