"""Profile one benchmark row: the gateway under wrk load, sampled by py-spy.

    python bench/profile.py [api-key|user|member|caregiver|decision|decision-listener|
                             decision-nginx|mobile|bare]
                            [--seconds 10]

Starts the same stack as ``bench/run.py`` (nginx upstream and Redis on core 1, the server on
core 0), drives one row with wrk, samples the server with ``py-spy record`` (native frames
off, idle frames off), and prints the functions with the most samples: by self time, and
inclusive. This is the profile the performance notes in docs/performance.md cite. Needs py-spy
(``pip install py-spy``) and ptrace rights (root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (
    AUTH_BODY,
    MOBILE_SCRIPT,
    binary,
    credentials,
    free_port,
    nginx,
    python_server,
    stack,
    start_gateway,
    token_script,
    wrk,
)

PATH = "/v1/users/usr_a/scores"


def function_of(frame: str) -> str:
    """'name (path/file.py:line)' to 'name file.py': samples add up per function."""
    name, _, where = frame.partition(" (")
    return f"{name} {where.rsplit('/', 1)[-1].split(':')[0]}"


def summarise(raw: Path, top: int) -> str:
    """Collapsed stacks ("frame;frame;frame count") to self and inclusive tables."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [function_of(f) for f in stack_text.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    out = [f"{total} samples", "", "self %  function"]
    out += [f"{n / total * 100:5.1f}  {name}" for name, n in own.most_common(top)]
    out += ["", "incl %  function"]
    out += [f"{n / total * 100:5.1f}  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(out)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of ``pid``, by thread name and id."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        out[f"{name} ({task.name})"] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "row",
        choices=[
            "api-key",
            "user",
            "member",
            "caregiver",
            "decision",
            "decision-listener",
            "decision-nginx",
            "mobile",
            "bare",
        ],
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--active-kid",
        default="rs1",
        choices=["rs1", "es1", "ed1"],
        help="the signing key (RS256/ES256/EdDSA)",
    )
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks in this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gw-profile-") as tmpdir:
        tmp = Path(tmpdir)
        with stack(tmp, args.seconds) as ctx:
            headers: dict[str, str] = {}
            script = None
            if args.row == "bare":
                server = python_server(
                    "bare", "bare_proxy.py", f"http://127.0.0.1:{ctx['up_port']}"
                )
                ctx["started"].append(server)  # type: ignore[attr-defined]
                url = f"http://127.0.0.1:{server.port}{PATH}"
            else:
                decision_port = free_port()
                decision = {
                    "enabled": True,
                    "proxy": "envoy",  # asked as /decisions{PATH}
                    "listen": {"host": "127.0.0.1", "port": decision_port},
                }
                server, admin = start_gateway(
                    tmp, "gw", ctx, {"decision": decision}, active_kid=args.active_kid
                )
                creds = asyncio.run(credentials(server.port, admin, 1000))
                url = f"http://127.0.0.1:{server.port}{PATH}"
                chosen = {
                    "api-key": creds["key"],
                    "user": creds["user_tokens"][0],  # type: ignore[index]
                    "member": creds["member"],
                    "caregiver": creds["caregiver"],
                }
                if args.row == "mobile":
                    url = f"http://127.0.0.1:{server.port}"
                    script = tmp / "mobile.lua"
                    script.write_text(MOBILE_SCRIPT.format(key=creds["key"]))
                elif args.row == "decision-nginx":
                    # nginx auth_request asking the decision listener; the gateway is profiled
                    front_port = free_port()
                    front = nginx(
                        tmp,
                        "auth",
                        front_port,
                        AUTH_BODY,
                        ctx["up_port"],
                        decision_port,  # type: ignore[arg-type]
                    )
                    ctx["started"].append(front)  # type: ignore[attr-defined]
                    url = f"http://127.0.0.1:{front_port}{PATH}"
                    script = token_script(tmp, creds["user_tokens"], "users")  # type: ignore[arg-type]
                elif args.row.startswith("decision"):
                    port = decision_port if args.row == "decision-listener" else server.port
                    url = f"http://127.0.0.1:{port}/decisions{PATH}"
                    script = token_script(tmp, creds["user_tokens"], "users")  # type: ignore[arg-type]
                else:
                    headers = {"Authorization": f"Bearer {chosen[args.row]}"}
            wrk(url, 2, headers=headers, script=script)  # warm the caches
            raw = tmp / "profile.txt"
            target = server.proc.pid
            spy = threading.Thread(
                target=subprocess.run,
                args=(
                    [
                        binary("py-spy"),
                        "record",
                        "--pid",
                        str(target),
                        "--duration",
                        str(args.seconds),
                        "--rate",
                        "250",
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                    ],
                ),
                kwargs={"capture_output": True, "check": True},
            )
            before = thread_cpu(target)
            spy.start()
            rps, _, _, _ = wrk(url, args.seconds, headers=headers, script=script)
            spy.join()
            after = thread_cpu(target)
            print(f"{args.row}: {rps:,.0f} req/s under py-spy\n")
            print("CPU by thread (py-spy counts a thread blocked on a lock as busy):")
            for name, seconds in sorted(after.items(), key=lambda kv: -kv[1]):
                used = seconds - before.get(name, 0.0)
                print(f"  {used / args.seconds * 100:5.1f} % of a core  {name}")
            print()
            print(summarise(raw, args.top))
            if args.raw:
                shutil.copyfile(raw, args.raw)


if __name__ == "__main__":
    main()
