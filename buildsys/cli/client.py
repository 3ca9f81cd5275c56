"""The ``buildsys`` entry point, and its thin client: a build handed to the project's watcher.

``buildsys watch`` runs one long-lived process per project (build/watcher.py) that holds the
engine imported and knows, from inotify, what changed. Before click or the engine is imported,
:func:`main` asks it to run this very command (cli/server.py): it sends argv, the working folder,
the whole environment, the umask and its own stdin, stdout and stderr (the descriptors
themselves, over the Unix socket), so the served build writes to this terminal as a local one
would, and exits with the code the server sends back.

When the server may serve is decided as Bazel's client decides whether its server's startup
options match: :func:`startup_facts` are what a process fixes when it starts (the interpreter,
``sys.path``, the buildsys package, the locale and ``PYTHON*``/``LD_*``/``LC_*`` variables, the
user and groups, limits and niceness); the server serves only a client whose facts equal its own,
of the same user, while its own code on disk is the code it runs. Anything a build reads later
(``BUILDSYS_*``, the user config, ``HOME``, ``TMPDIR``...) comes with the request and is the served
build's environment. Every doubt runs the build here instead: ``BUILDSYS_SERVE=0``, no socket, a
socket nobody answers, a command or flag not in :data:`SERVED`, a refusal. Once the server said it
started, the build is its: if it dies the client says so and exits 1 (never builds twice).
"""

from __future__ import annotations

import json
import os
import sys

PROTOCOL = 1
RUN = b"RUN "  # build/watcher.py hands requests that start so to the run handler
SERVE_ENV = "BUILDSYS_SERVE"
DIED = 1
WAIT_NOTE_S = 5.0  # the watcher serves one build at a time: say why a wait is longer than this
INTERRUPTED = 130

# Per command: the options served (with whether each takes a value). Anything else is built here.
_BUILDFILE = {"-f": True, "--buildfile": True}
SERVED = {
    "build": {**_BUILDFILE, "-j": True, "--jobs": True, "-k": False, "--keep-going": False, "--json": False, "-v": False, "--verbose": False},
    "plan": {**_BUILDFILE, "--json": False},
}
SERVED["status"] = SERVED["plan"]


def main() -> None:
    code = served(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from buildsys.cli.main import main as cli

    cli()


def buildfile_of(args: list[str]) -> str | None:
    """The Buildfile a served command names (``Buildfile.toml`` by default); None when an
    argument is one the client does not serve."""
    options = SERVED.get(args[0]) if args else None
    if options is None:
        return None
    buildfile = "Buildfile.toml"
    rest = iter(args[1:])
    for arg in rest:
        if not arg.startswith("-") or arg == "-":
            continue  # a target
        name, equals, value = arg.partition("=")
        if not equals and name[:2] in options and len(name) > 2 and not name.startswith("--"):
            name, value, equals = name[:2], name[2:], "="  # -j2, -fPATH
        if name not in options or (equals and not options[name]):
            return None
        if options[name] and not equals:
            value = next(rest, None)  # type: ignore[assignment]
            if value is None:
                return None
        if name in _BUILDFILE:
            buildfile = value
    return buildfile


def startup_facts() -> dict:
    """What a process fixes when it starts: a server serves only a client whose facts are its own."""
    import resource

    import buildsys

    env = {k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "LD_", "LC_")) or k in ("LANG", "LANGUAGE")}
    env.pop(SERVE_ENV, None)
    limits = [resource.getrlimit(getattr(resource, f"RLIMIT_{name}")) for name in ("AS", "DATA", "NOFILE", "NPROC", "CPU", "FSIZE")]
    return {
        "protocol": PROTOCOL, "executable": sys.executable, "python": sys.version, "buildsys": buildsys.__version__,
        "package": os.path.dirname(os.path.abspath(buildsys.__file__)),
        "path": sys.path if sys.flags.safe_path else sys.path[1:],  # sys.path[0]: the script's folder or the cwd
        "flags": [sys.flags.optimize, sys.flags.utf8_mode, sys.flags.dev_mode, sys.flags.isolated, sys.flags.ignore_environment],
        "encoding": [sys.getfilesystemencoding(), sys.getdefaultencoding()],
        "env": env, "user": [os.getuid(), os.getgid(), sorted(os.getgroups())], "limits": limits, "nice": os.nice(0),
    }


def program_name() -> str:
    """What click calls this program in its messages (``buildsys``, ``python -m buildsys``)."""
    package = getattr(sys.modules.get("__main__"), "__package__", None)
    if not package:
        return os.path.basename(sys.argv[0])
    name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    return f"python -m {package if name == '__main__' else f'{package}.{name}'}"


def served(args: list[str]) -> int | None:
    """The exit code of this command as the project's watcher ran it, or None where it did not
    (then the caller runs it here)."""
    if os.environ.get(SERVE_ENV, "1") == "0":
        return None
    buildfile = buildfile_of(args)
    if buildfile is None:
        return None
    from buildsys.build.index_path import socket_path

    path = socket_path(buildfile)
    if not os.path.exists(path):
        return None
    import socket

    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except OSError:  # a socket left behind by a watcher that died
        connection.close()
        return None
    with connection:
        request = {"argv": args, "prog": program_name(), "cwd": os.getcwd(), "env": dict(os.environ), "umask": _umask(), "startup": startup_facts()}
        try:
            socket.send_fds(connection, [RUN + json.dumps(request).encode() + b"\n"], [0, 1, 2])
        except OSError:
            return None
        return _follow(connection)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _follow(connection) -> int | None:
    """Wait for the server's answers: whether it serves, then the exit code. Ctrl-C asks it to
    cancel the build (the code is still the server's); a second one leaves at once."""
    import signal

    reader = connection.makefile("rb")
    interrupts = 0

    def interrupt(signum: int, frame: object) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            sys.stderr.write("buildsys: left the served build (the watcher goes on cancelling it)\n")
            os._exit(INTERRUPTED)
        try:
            connection.sendall(b"cancel\n")
        except OSError:
            pass

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        import select

        if not select.select([connection], [], [], WAIT_NOTE_S)[0]:
            sys.stderr.write("buildsys: waiting for the build the watcher is running now\n")
        answer = _message(reader)
        if answer is None or not answer.get("serve"):
            return INTERRUPTED if interrupts else None  # nothing was started: build here
        done = _message(reader)
        if done is None or "exit" not in done:
            sys.stderr.write(
                f"buildsys: error: the watcher (pid {answer.get('pid')}) serving this build stopped before it finished; "
                "what it completed is kept: run the build again\n"
            )
            return DIED
        return int(done["exit"])
    finally:
        signal.signal(signal.SIGINT, previous)


def _message(reader) -> dict | None:
    try:
        line = reader.readline()
        return json.loads(line) if line.endswith(b"\n") else None
    except (OSError, ValueError):
        return None
