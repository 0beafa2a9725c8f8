"""`hello-py`: the hello skill in Python, built with componentize-py.

Input: {"name": "Ada", "echo": false}. It logs a line, reports progress,
counts its runs in a checkpoint, and, with "echo": true, asks the host to
run `echo hi` (allowed only when the operator grants it; a denial is
reported in the summary, not a crash). Returns a greeting as text and data.

Build: see README.md beside this file.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import checkpoint, exec as host_exec, progress
from wit_world.imports.types import Failure, FailureKind, Summary


def failure(kind: FailureKind, message: str) -> Err:
    """A `failure` for the host: `raise failure(...)` returns `err`."""
    return Err(Failure(kind=kind, message=message, data=None))


def greet(args: dict) -> Summary:
    name = args.get("name", "world")
    if not isinstance(name, str):
        raise failure(FailureKind.INVALID_INPUT, "`name` must be a string")
    progress.log(progress.Level.INFO, f"greeting {name}")
    progress.report(0.5, "composing the greeting")

    previous = checkpoint.load("runs")
    runs = int(previous.decode()) + 1 if previous is not None else 1
    checkpoint.save("runs", str(runs).encode())

    data = {"greeting": f"Hello, {name}! 👋", "runs": runs}
    if args.get("echo"):
        command = host_exec.Command(
            program="echo", args=["hi"], cwd=None, env=[], stdin=None, timeout_ms=5000
        )
        try:
            out = host_exec.run(command)
            data["echo"] = {"status": out.status, "stdout": out.stdout.decode(errors="replace")}
        except Err as e:
            if isinstance(e.value, host_exec.ExecError_Denied):
                progress.log(progress.Level.WARN, f"echo refused: {e.value.value}")
                data["echo"] = {"denied": e.value.value}
            else:
                raise failure(FailureKind.FAILED, f"echo failed: {e.value}")
    progress.report(1.0, "done")
    return Summary(text=data["greeting"], data=json.dumps(data, ensure_ascii=False))


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> Summary:
        try:
            args = json.loads(input) if input.strip() else {}
        except ValueError as e:
            raise failure(FailureKind.INVALID_INPUT, f"input is not JSON: {e}")
        if not isinstance(args, dict):
            raise failure(FailureKind.INVALID_INPUT, "input must be a JSON object")
        try:
            return greet(args)
        except Err:
            raise
        except Exception as e:  # an uncaught exception would trap the component
            raise failure(FailureKind.FAILED, f"{type(e).__name__}: {e}")
