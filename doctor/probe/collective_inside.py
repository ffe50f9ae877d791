"""The collective stage, run by the inspected interpreter under torchrun (stdlib + torch).

Run as ``python -c <this source> torch-doctor-collective``; the first line of stdin is
the request: {"timeout": seconds, "elements": n, "report": this rank's compact report}.
Every rank joins the job's rendezvous store (torchrun's agent store, else rank 0 hosts
one at MASTER_ADDR:MASTER_PORT), leaves its report there, joins a process group (NCCL on
GPUs, gloo on CPUs) and all-reduces a tensor whose sum it knows. Results travel through
the store, not through the process group, so a broken NCCL still reports, and no
``all_gather_object`` (which needs numpy on some builds) is used.

Rank 0 waits for every rank's result, names the ranks that never joined or never
finished, and prints one line ``TORCH_DOCTOR_COLLECTIVE <json>``; it then waits for one
line on stdin (its doctor has shown the report) before it lets the other ranks go, so no
rank exits (and makes torchrun stop the others) while rank 0 still reports.
"""

import json
import os
import socket
import sys
import time
import traceback
from datetime import timedelta

MARKER = "TORCH_DOCTOR_COLLECTIVE "
TIMING_ROUNDS = 3


def say(payload):
    sys.stdout.write(MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()


def short(exc):
    text = "{}: {}".format(type(exc).__name__, exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def env_int(name, default=None):
    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else default


def open_store(dist, rank, world, timeout):
    address = os.environ["MASTER_ADDR"]
    port = int(os.environ["MASTER_PORT"])
    # torchrun's agent already serves a store there; without an agent, rank 0 serves it.
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(
        address,
        port,
        world,
        is_master=(rank == 0 and not agent),
        timeout=timedelta(seconds=timeout),
        wait_for_workers=False,
    )
    run = "{}/{}".format(
        os.environ.get("TORCHELASTIC_RUN_ID", "none"),
        os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"),
    )
    return dist.PrefixStore("torch-doctor/{}/".format(run), store)


def all_reduce(torch, dist, rank, world, elements, device):
    """Sum (rank + 1) over the ranks: correct when every element is n(n+1)/2; then the
    mean time of a few all-reduces gives the bus bandwidth (nccl-tests' definition)."""
    tensor = torch.full((elements,), float(rank + 1), dtype=torch.float32, device=device)
    dist.all_reduce(tensor)
    if device.type == "cuda":
        torch.cuda.synchronize()
    expected = world * (world + 1) / 2.0
    wrong = int((tensor != expected).sum().item())
    start = time.perf_counter()
    for _ in range(TIMING_ROUNDS):
        dist.all_reduce(tensor)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / TIMING_ROUNDS
    size = elements * 4
    bus = size * 2.0 * (world - 1) / world / seconds if seconds > 0 and world > 1 else None
    return wrong, expected, seconds, bus


def main():
    request = json.loads(sys.stdin.readline())
    timeout = float(request["timeout"])
    elements = int(request.get("elements", 1 << 18))
    rank = env_int("RANK", 0)
    world = env_int("WORLD_SIZE", 1)
    # The host as this rank's report names it (a pseudonym when the report is redacted).
    host = request.get("host") or socket.gethostname()
    result = {
        "rank": rank,
        "host": host,
        "status": "failed",
        "stage": "import torch",
        "backend": None,
        "error": None,
        "seconds": None,
        "bus_bandwidth_bytes": None,
        "wrong_elements": None,
    }
    begun = time.monotonic()
    try:
        import torch
        import torch.distributed as dist

        result["stage"] = "join the rendezvous store"
        store = open_store(dist, rank, world, timeout)
        store.set("report/{}".format(rank), json.dumps(request.get("report")))
        store.set("joined/{}".format(rank), host)
    except Exception as exc:  # noqa: BLE001 - the stage's failure is its result
        result["error"] = short(exc)
        say({"self": result, "ranks": [result], "reports": {}, "world_size": world})
        return 0
    try:
        if torch.cuda.is_available() and dist.is_nccl_available():
            backend = "nccl"
            local = env_int("LOCAL_RANK", 0)
            torch.cuda.set_device(local % torch.cuda.device_count())
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            backend, device = "gloo", torch.device("cpu")
        result["backend"] = backend
        result["stage"] = "join the process group"
        dist.init_process_group(
            backend,
            store=dist.PrefixStore("pg/", store),
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout),
        )
        result["stage"] = "all-reduce"
        wrong, expected, seconds, bus = all_reduce(torch, dist, rank, world, elements, device)
        result.update(seconds=seconds, bus_bandwidth_bytes=bus, wrong_elements=wrong)
        result["status"] = "ok" if wrong == 0 else "wrong-result"
        if wrong:
            result["error"] = "{} of {} elements are not {}".format(wrong, elements, expected)
    except Exception as exc:  # noqa: BLE001
        result["error"] = short(exc)
    store.set("result/{}".format(rank), json.dumps(result))
    if rank != 0:
        say({"self": result, "ranks": [result], "reports": {}, "world_size": world})
        sys.stdout.flush()
        try:  # stay until rank 0 has reported (torchrun stops everyone when one exits)
            store.wait(["done"], timedelta(seconds=3 * timeout))
        except Exception:  # noqa: BLE001
            pass
        return 0
    # Rank 0: every rank's result, or why there is none.
    grace = min(timeout, 10.0)
    deadline = max(time.monotonic() + grace, begun + timeout)
    keys = ["result/{}".format(r) for r in range(world)]
    while time.monotonic() < deadline and not store.check(keys):
        time.sleep(0.2)
    ranks = []
    reports = {}
    for other in range(world):
        if store.check(["report/{}".format(other)]):
            reports[str(other)] = json.loads(store.get("report/{}".format(other)))
        if store.check(["result/{}".format(other)]):
            ranks.append(json.loads(store.get("result/{}".format(other))))
            continue
        joined = store.check(["joined/{}".format(other)])
        other_host = store.get("joined/{}".format(other)).decode() if joined else None
        ranks.append(
            {
                "rank": other,
                "host": other_host,
                "status": "did-not-finish" if joined else "never-joined",
                "stage": "all-reduce" if joined else None,
                "backend": result["backend"],
                "error": (
                    "joined the job but sent no result within {:g} s: it hangs or died "
                    "in the collective".format(timeout)
                    if joined
                    else "never joined the job's rendezvous within {:g} s".format(timeout)
                ),
                "seconds": None,
                "bus_bandwidth_bytes": None,
                "wrong_elements": None,
            }
        )
    say({"self": result, "ranks": ranks, "reports": reports, "world_size": world})
    sys.stdin.readline()  # the doctor has shown the report
    store.set("done", "1")
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except Exception:  # noqa: BLE001 - a bug here: its traceback on stderr, for the doctor
        traceback.print_exc()
        code = 3
    sys.stdout.flush()
    # No destroy_process_group, no interpreter shutdown: a peer that hangs must not keep us.
    os._exit(code)
