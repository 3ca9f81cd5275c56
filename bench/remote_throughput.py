"""Remote cache throughput: buildsys push/pull next to a plain client moving the same bytes.

Workloads: one large blob (``--large-mib``, default 1024) and many small blobs
(``--small-count`` x ``--small-kib``, default 10,000 x 4 KiB), against nginx WebDAV, moto's
S3 server and a shared folder, all on loopback, started here. Plain clients: curl (``-T`` /
``-o``; ``--parallel`` for many files), boto3 ``upload_file``/``download_file`` (a thread pool
for many files), ``cp``. buildsys does more work than the plain client: existence checks
before upload (except HTTP blobs under 64 KiB, sent unasked), a re-hash after download (and
before upload of a blob the local store cannot vouch for; the blobs here were hashed by this
process), an atomic rename into the store and, for pulls this large, a durable journal of
what was moved in unflushed instead of a flush (buildsys/store/unflushed.py). So a second,
fairer baseline is timed too ("plain+"): the plain client plus the guarantees it lacks that
cost time outside buildsys's control: ``sync`` (fsync) of what it wrote locally (file copies,
curl downloads), and for HTTP uploads an existence probe per blob (``curl -I``) before the
PUTs. Hashing is not added to the baseline (BLAKE3 runs at several GB/s; it is part of
buildsys's cost). Prints a markdown table for BENCHMARKS.md.

Nothing is deleted until the end: every timed destination is a fresh folder. On a journal-less
ext4 (this workplace's VM), creating a file within a minute or so of a mass delete in the same
block group scans every recently freed inode (``recently_deleted`` in the kernel's inode
allocator): removing one client's 10,000 files made the next client's 10,000 creates 5-10x
slower, whichever client it was. The price is disk space: about 6 GiB per round and backend at
the default sizes (every copy of the 1 GiB blob stays until the end).

    .venv/bin/python bench/remote_throughput.py --large-mib 256 --small-count 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from buildsys.project.config import RemoteSettings  # noqa: E402
from buildsys.remote import open_remote  # noqa: E402
from buildsys.remote.cache import RemoteCache  # noqa: E402
from buildsys.remote.signing import Signer, TrustedKeys, generate_key  # noqa: E402
from buildsys.store import LocalStore  # noqa: E402
from tests.remote_servers import MotoServer, NginxServer  # noqa: E402

MiB = 1 << 20


@dataclass
class Row:
    backend: str
    workload: str
    direction: str
    nbytes: int
    ours_s: float
    plain_s: float
    plain_name: str
    fair_s: float | None = None
    fair_name: str = ""

    def line(self) -> str:
        ours = self.nbytes / MiB / self.ours_s
        plain = self.nbytes / MiB / self.plain_s
        fair = f"{self.fair_s:.2f} | {self.fair_name} | {self.fair_s / self.ours_s:.2f}" if self.fair_s else "- | - | -"
        return (
            f"| {self.backend} | {self.workload} | {self.direction} | {ours:,.1f} | {self.ours_s:.2f} "
            f"| {plain:,.1f} | {self.plain_s:.2f} | {self.plain_name} | {ours / plain:.2f} | {fair} |"
        )


def timed(fn: Callable[[], object], warm: Path | str | None = None) -> float:
    """Seconds ``fn`` takes, started on a clean page cache (``sync`` first), so no step pays
    for the disk writeback of the step before (making the blobs, the other client's run).
    ``warm``: a file the step reads, read through first, so that every client copies the
    large blob out of the page cache; otherwise whichever client ran first read it from disk
    (or from pages the host had taken back) and the next one found it cached (a folder push
    of 1 GiB: 0.40-0.44 s for buildsys, first, against 0.28-0.34 s for ``cp`` right after)."""
    if warm is not None:
        with open(warm, "rb", buffering=0) as handle:
            while handle.read(16 * MiB):
                pass
    os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"{cmd[0]} failed ({done.returncode}): {done.stderr[-2000:]}")


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"benchmark step failed: {what}")


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.src = LocalStore(work / "src")
        self.rows: list[Row] = []
        self.rounds: dict[str, list[tuple]] = {}
        self.names: dict[str, tuple] = {}
        self.large, self.small = self._make_blobs()
        generate_key("bench", work / "keys")  # a push needs a signing key (records are pushed signed)
        self.signer = Signer.load("bench", work / "keys")
        self.large_bytes = args.large_mib * MiB
        self.folders = 0
        self.small_bytes = args.small_count * args.small_kib * 1024

    def _make_blobs(self) -> tuple[str, list[str]]:
        path = self.work / "large.tmp"
        with open(path, "wb") as out:
            for _ in range(self.args.large_mib):
                out.write(os.urandom(MiB))
        large, _ = self.src.blobs.put_file(path)
        path.unlink()
        small = [self.src.blobs.put_bytes(os.urandom(self.args.small_kib * 1024)) for _ in range(self.args.small_count)]
        return large, small

    def fresh(self, name: str) -> Path:
        """A new empty folder (see the module docstring for why nothing is reused)."""
        self.folders += 1
        path = self.work / f"{name}-{self.folders}"
        path.mkdir(parents=True)
        return path

    def cache(self, url: str, settings: RemoteSettings, store: LocalStore) -> RemoteCache:
        remote = open_remote(url, settings)
        return RemoteCache(store, remote, TrustedKeys(), self.signer, False, self.args.parallel, lambda m: print("warning:", m, file=sys.stderr))

    def ours(self, name: str, url: str, settings: RemoteSettings, remote_large: Path | None) -> tuple[float, float, float, float]:
        """buildsys's four timings; ``remote_large``: where the remote keeps the large blob
        once pushed, on this machine's disk (None: in a server's memory)."""
        push = self.cache(url, settings, self.src)
        t_large_up = timed(lambda: check(push.push_blobs([self.large]), "push large"), warm=self.src.blobs.path(self.large))
        t_small_up = timed(lambda: check(push.push_blobs(self.small), "push small"))
        push.close()
        dst = LocalStore(self.fresh(f"dst-{name}"))
        pull = self.cache(url, settings, dst)
        t_large_down = timed(lambda: check(self.large in pull.pull_blobs([self.large]), "pull large"), warm=remote_large)
        t_small_down = timed(lambda: check(len(pull.pull_blobs(self.small)) == len(self.small), "pull small"))
        pull.close()
        return t_large_up, t_large_down, t_small_up, t_small_down

    def record(
        self, backend: str, ours: tuple[float, ...], plain: tuple[float, ...], plain_name: str, fair: tuple = (None,) * 4, fair_names: tuple = ("",) * 4
    ) -> None:
        """One round of a backend: printed now, kept for the medians of :meth:`finish`."""
        self.rounds.setdefault(backend, []).append((ours, plain, fair))
        for row in self._rows(backend, ours, plain, plain_name, fair, fair_names):
            print(f"round {len(self.rounds[backend])}: {row.line()}", flush=True)
        self.names[backend] = (plain_name, fair_names)

    def finish(self) -> None:
        """Rows of medians over the rounds of each backend (small-file timings on this machine
        swing up to 5x between back-to-back runs, for every client alike)."""
        for backend, rounds in self.rounds.items():
            medians = [tuple(None if cell[0] is None else statistics.median(cell) for cell in zip(*column)) for column in zip(*rounds)]
            self.rows += self._rows(backend, *medians[:2], self.names[backend][0], medians[2], self.names[backend][1])

    def _rows(self, backend: str, ours: tuple, plain: tuple, plain_name: str, fair: tuple, fair_names: tuple) -> list[Row]:
        large, small = f"1 x {self.args.large_mib} MiB", f"{self.args.small_count:,} x {self.args.small_kib} KiB"
        workloads = [(large, "push", self.large_bytes), (large, "pull", self.large_bytes), (small, "push", self.small_bytes), (small, "pull", self.small_bytes)]
        return [
            Row(backend, workload, direction, nbytes, o, p, plain_name, f, fn)
            for (workload, direction, nbytes), o, p, f, fn in zip(workloads, ours, plain, fair, fair_names)
        ]

    # backends ------------------------------------------------------------------------------

    def http(self, nginx: NginxServer) -> None:
        base = f"{nginx.url}/cache/r{self.folders}"
        served = nginx.root / "cache" / f"r{self.folders}"
        ours = self.ours("http", f"{base}/ours", RemoteSettings(parallel=self.args.parallel), served / "ours" / "cas" / self.large)
        plain_url = f"{base}/plain"
        out = self.fresh("curl-out")
        p = str(self.args.parallel)
        large_path = str(self.src.blobs.path(self.large))
        t1 = timed(lambda: run(["curl", "-sS", "-f", "-T", large_path, f"{plain_url}/large"]), warm=large_path)
        t2 = timed(lambda: run(["curl", "-sS", "-f", "-o", str(out / "large"), f"{plain_url}/large"]), warm=served / "plain" / "large")
        up_cfg, down_cfg = self.work / "up.curl", self.work / "down.curl"
        up_cfg.write_text("".join(f'upload-file = "{self.src.blobs.path(d)}"\nurl = "{plain_url}/cas/{d}"\n' for d in self.small))
        down_cfg.write_text("".join(f'url = "{plain_url}/cas/{d}"\noutput = "{out / d}"\n' for d in self.small))
        t3 = timed(lambda: run(["curl", "-sS", "-f", "--parallel", "--parallel-max", p, "-K", str(up_cfg)]))
        t4 = timed(lambda: run(["curl", "-sS", "-f", "--parallel", "--parallel-max", p, "-K", str(down_cfg)]))
        check(len(os.listdir(out)) == len(self.small) + 1, "curl downloads")
        # fair: downloads fsynced; uploads preceded by an existence probe per blob (fresh names)
        fair_url = f"{base}/fair"
        head_cfg = self.work / "head.curl"
        head_cfg.write_text("".join(f'url = "{fair_url}/cas/{d}"\n' for d in self.small))
        up_cfg.write_text(up_cfg.read_text().replace(plain_url, fair_url))
        curl_par = ["curl", "-s", "--parallel", "--parallel-max", p]
        f1 = timed(lambda: (run(["curl", "-s", "-I", f"{fair_url}/large"]), run(["curl", "-sS", "-f", "-T", large_path, f"{fair_url}/large"])), warm=large_path)
        f3 = timed(lambda: (run(curl_par + ["-I", "-K", str(head_cfg)]), run(curl_par + ["-S", "-f", "-K", str(up_cfg)])))
        out = self.fresh("curl-out")
        down_cfg.write_text("".join(f'url = "{plain_url}/cas/{d}"\noutput = "{out / d}"\n' for d in self.small))
        f2 = timed(lambda: (run(["curl", "-sS", "-f", "-o", str(out / "large"), f"{plain_url}/large"]), run(["sync", str(out / "large")])),
                   warm=served / "plain" / "large")
        f4 = timed(lambda: (run(curl_par + ["-S", "-f", "-K", str(down_cfg)]), self._sync([str(out / d) for d in self.small])))
        self.record("http (nginx WebDAV)", ours, (t1, t2, t3, t4), f"curl, --parallel-max {p}", (f1, f2, f3, f4),
                    ("curl -I + -T", "curl + sync", "curl -I + -T", "curl + sync"))

    def _sync(self, paths: list[str]) -> None:
        subprocess.run(["xargs", "-P", str(self.args.parallel), "-n", "500", "sync"], input="\n".join(paths), text=True, check=True)

    def s3(self, moto: MotoServer) -> None:
        bucket = f"bench{len(self.rounds.get('s3 (moto server)', []))}"  # a fresh bucket each round
        client = moto.client()
        client.create_bucket(Bucket=bucket)
        settings = RemoteSettings(parallel=self.args.parallel, s3_endpoint_url=moto.url, s3_region="us-east-1")
        ours = self.ours("s3", f"s3://{bucket}/ours", settings, None)
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        client = boto3.client(
            "s3", endpoint_url=moto.url, region_name="us-east-1", config=Config(max_pool_connections=2 * self.args.parallel)
        )
        transfer = TransferConfig(multipart_threshold=16 * MiB, multipart_chunksize=16 * MiB, max_concurrency=max(2, self.args.parallel // 2))
        out = self.fresh("boto-out")
        large_path = str(self.src.blobs.path(self.large))
        t1 = timed(lambda: client.upload_file(large_path, bucket, "plain/large", Config=transfer), warm=large_path)
        t2 = timed(lambda: client.download_file(bucket, "plain/large", str(out / "large"), Config=transfer))
        with ThreadPoolExecutor(self.args.parallel) as pool:
            t3 = timed(lambda: list(pool.map(lambda d: client.upload_file(str(self.src.blobs.path(d)), bucket, f"plain/cas/{d}"), self.small)))
            t4 = timed(lambda: list(pool.map(lambda d: client.download_file(bucket, f"plain/cas/{d}", str(out / d)), self.small)))
        self.record("s3 (moto server)", ours, (t1, t2, t3, t4), f"boto3, {self.args.parallel} threads")

    def folder(self) -> None:
        share = self.fresh("share")
        ours = self.ours("file", f"file://{share}", RemoteSettings(parallel=self.args.parallel), share / "cas" / self.large)
        plain, back = self.fresh("plain-share"), self.fresh("plain-back")
        large_path = str(self.src.blobs.path(self.large))
        small_paths = "\n".join(str(self.src.blobs.path(d)) for d in self.small)
        t1 = timed(lambda: run(["cp", large_path, str(plain / "large")]), warm=large_path)
        t2 = timed(lambda: run(["cp", str(plain / "large"), str(back / "large")]), warm=plain / "large")
        (plain / "cas").mkdir()
        (back / "cas").mkdir()
        xargs = ["xargs", "-P", str(self.args.parallel), "-n", "500", "cp", "-t"]
        t3 = timed(lambda: subprocess.run(xargs + [str(plain / "cas")], input=small_paths, text=True, check=True))
        copied = "\n".join(str(plain / "cas" / d) for d in self.small)
        t4 = timed(lambda: subprocess.run(xargs + [str(back / "cas")], input=copied, text=True, check=True))
        # fair: the same copies, each fsynced (sync FILE), into fresh folders
        fair, fair_back = self.fresh("fair-share"), self.fresh("fair-back")
        (fair / "cas").mkdir()
        (fair_back / "cas").mkdir()
        f1 = timed(lambda: (run(["cp", large_path, str(fair / "large")]), run(["sync", str(fair / "large")])), warm=large_path)
        f2 = timed(lambda: (run(["cp", str(fair / "large"), str(fair_back / "large")]), run(["sync", str(fair_back / "large")])), warm=fair / "large")
        f3 = timed(lambda: (subprocess.run(xargs + [str(fair / "cas")], input=small_paths, text=True, check=True),
                            self._sync([str(fair / "cas" / d) for d in self.small])))
        fair_copied = "\n".join(str(fair / "cas" / d) for d in self.small)
        f4 = timed(lambda: (subprocess.run(xargs + [str(fair_back / "cas")], input=fair_copied, text=True, check=True),
                            self._sync([str(fair_back / "cas" / d) for d in self.small])))
        self.record("file (local folder)", ours, (t1, t2, t3, t4), "cp (xargs -P for many)", (f1, f2, f3, f4), ("cp + sync",) * 4)

    def table(self) -> str:
        head = (
            "| backend | workload | direction | buildsys MiB/s | buildsys s | plain MiB/s | plain s | plain client | ratio "
            "| plain+ s | plain+ client | ratio vs plain+ |\n"
            "|---|---|---|---:|---:|---:|---:|---|---:|---:|---|---:|"
        )
        return "\n".join([head] + [row.line() for row in self.rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--small-count", type=int, default=10_000)
    parser.add_argument("--small-kib", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--backends", default="http,s3,file")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per backend; the table gives medians")
    parser.add_argument("--workdir", type=Path, default=None, help="Scratch space (default: a temp dir).")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="buildsys-bench-", dir=args.workdir))
    servers: list = []
    try:
        bench = Bench(args, work)
        print(f"# blobs ready in {work}; nproc={os.cpu_count()} parallel={args.parallel}", flush=True)
        for backend in args.backends.split(","):
            if backend == "http":
                nginx = NginxServer(work / "nginx", workers=2).start()
                servers.append(nginx)
                for _ in range(args.repeat):
                    bench.http(nginx)
            elif backend == "s3":
                for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
                    os.environ.setdefault(name, value)
                moto = MotoServer().start(work / "moto.log")
                servers.append(moto)
                try:
                    for _ in range(args.repeat):
                        bench.s3(moto)
                except SystemExit:
                    print((work / "moto.log").read_text(errors="replace")[-3000:], file=sys.stderr)
                    raise
                moto.stop()
            elif backend == "file":
                for _ in range(args.repeat):
                    bench.folder()
            else:
                raise SystemExit(f"unknown backend {backend!r}")
        bench.finish()
        print()
        print(bench.table())
    finally:
        for server in servers:
            server.stop()
        subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
