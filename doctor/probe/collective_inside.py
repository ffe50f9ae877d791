"""The collective stage, run by the inspected interpreter under torchrun (stdlib + torch).

Run as ``python -c <this source> torch-doctor-collective``; the first line of stdin is
the request: {"timeout": seconds, "elements": n, "report": this rank's compact report,
"host": its host as the report names it}. Every rank joins the job's rendezvous store
(torchrun's agent store, else rank 0 hosts one at MASTER_ADDR:MASTER_PORT), leaves its
report there, learns the job's backend from rank 0 (NCCL when rank 0's torch sees a GPU
and has NCCL, else gloo: one backend for every rank; a rank that cannot use it says why
and does not join), joins the process group and all-reduces a tensor whose sum it knows.
Results travel through the store, not through the process group, so a broken NCCL still
reports, and no ``all_gather_object`` (which needs numpy on some builds) is used.

Rank 0 waits for every rank's result (a rank that joined the store gets --timeout and a
grace from the moment it joined, so a rank that reached the collective late is not taken
for a hung one), names the ranks that never joined or never finished, and prints one line
``TORCH_DOCTOR_COLLECTIVE <json>``. Every rank then waits for one line on stdin,
``shown <exit status>`` (its doctor has shown the report), and says so in the store. Rank
0 waits until every rank that sent a result has shown its report (up to --timeout), then
publishes its exit status as ``done``: the other ranks exit then, at once when it is 0,
else after a pause, so that torchrun, which stops every rank as soon as one exits with an
error, sees rank 0's status first.
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


# The stages, in order (RankResult.stage).
IMPORT, STORE, BACKEND, GROUP, REDUCE = (
    "import torch",
    "join the rendezvous store",
    "agree on the backend",
    "join the process group",
    "all-reduce",
)
# A rank that is not rank 0 stays this long after rank 0 failed (torchrun stops it first).
LINGER = 10.0
# The statuses rank 0 gives a rank that sent no result.
SILENT = ("never-joined", "did-not-finish")


def choose_backend(torch, dist):
    """Rank 0's choice for the job: (backend, why)."""
    if not dist.is_nccl_available():
        return "gloo", "rank 0's torch has no NCCL"
    if not torch.cuda.is_available():
        return "gloo", "rank 0's torch sees no GPU"
    return "nccl", "rank 0's torch sees {} GPU(s)".format(torch.cuda.device_count())


def cannot_use(torch, dist, backend):
    """(what is missing, why) when this rank cannot use the job's backend, else None."""
    if backend != "nccl":
        return None
    if not dist.is_nccl_available():
        return "nccl", "rank 0 chose NCCL; this rank's torch is built without NCCL"
    if not torch.cuda.is_available():
        return "cuda", (
            "rank 0 chose NCCL; torch.cuda.is_available() is False on this rank, so it "
            "cannot join (it would have used gloo on its own)"
        )
    if torch.cuda.device_count() == 0:
        return "gpu", "rank 0 chose NCCL; this rank sees no GPU"
    return None


def agree_on_backend(torch, dist, store, rank, timeout):
    """The job's backend: rank 0 publishes it in the store, the others read it."""
    if rank == 0:
        backend, why = choose_backend(torch, dist)
        store.set("backend", json.dumps({"backend": backend, "why": why}))
        return backend
    try:
        store.wait(["backend"], timedelta(seconds=timeout))
    except Exception:  # noqa: BLE001
        raise RuntimeError(
            "rank 0 published no backend within {:g} s (it never joined the store)".format(timeout)
        ) from None
    return json.loads(store.get("backend"))["backend"]


def joined_value(rank, host):
    """What a rank leaves under joined/<rank>: its host and its node's ranks (torchrun
    numbers one node's ranks contiguously: RANK - LOCAL_RANK, LOCAL_WORLD_SIZE of them),
    so rank 0 can name the host of a rank on that node that never joined."""
    local = env_int("LOCAL_RANK")
    count = env_int("LOCAL_WORLD_SIZE")
    first = rank - local if local is not None and local <= rank else None
    return json.dumps({"host": host, "first": first, "count": count})


def run_rank(torch, dist, store, result, rank, world, timeout, elements):
    """This rank's part after joining the store; fills ``result``."""
    result["stage"] = BACKEND
    backend = agree_on_backend(torch, dist, store, rank, timeout)
    result["backend"] = backend
    unusable = cannot_use(torch, dist, backend)
    if unusable is not None:
        result["missing"], result["error"] = unusable
        return
    if backend == "nccl":
        local = env_int("LOCAL_RANK", 0)
        torch.cuda.set_device(local % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    result["stage"] = GROUP
    dist.init_process_group(
        backend,
        store=dist.PrefixStore("pg/", store),
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout),
    )
    result["stage"] = REDUCE
    wrong, expected, seconds, bus = all_reduce(torch, dist, rank, world, elements, device)
    result.update(seconds=seconds, bus_bandwidth_bytes=bus, wrong_elements=wrong)
    result["status"] = "ok" if wrong == 0 else "wrong-result"
    if wrong:
        result["error"] = "{} of {} elements are not {}".format(wrong, elements, expected)


def shown_status():
    """Wait for the doctor's ``shown <exit status>`` (end of input counts as shown)."""
    words = sys.stdin.readline().split()
    if len(words) == 2 and words[0] == "shown" and words[1].lstrip("-").isdigit():
        return words[1]
    return "1"


def collect(store, world, timeout, begun, result):
    """Rank 0: wait for every rank's result; a rank that joined gets --timeout and a
    grace from when it was first seen in the store, one that did not until rank 0's own
    timeout (and a grace after its own result) has passed."""
    grace = min(timeout, 10.0)
    join_deadline = max(time.monotonic() + grace, begun + timeout)
    results = ["result/{}".format(r) for r in range(world)]
    missing = set(range(world))  # no result yet
    seen = {}  # rank -> when rank 0 first saw it in the store
    while missing:
        now = time.monotonic()
        waiting = False
        for other in sorted(missing):
            if store.check([results[other]]):
                missing.discard(other)
                continue
            if other not in seen and store.check(["joined/{}".format(other)]):
                seen[other] = now
            limit = seen[other] + timeout + grace if other in seen else join_deadline
            waiting = waiting or now < limit
        if not waiting:
            break
        time.sleep(0.2)
    joined = {}
    for other in range(world):
        if store.check(["joined/{}".format(other)]):
            try:
                joined[other] = json.loads(store.get("joined/{}".format(other)))
            except ValueError:
                joined[other] = {}
    ranks = []
    reports = {}
    for other in range(world):
        if store.check(["report/{}".format(other)]):
            reports[str(other)] = json.loads(store.get("report/{}".format(other)))
        if store.check([results[other]]):
            ranks.append(json.loads(store.get(results[other])))
            continue
        ranks.append(silent_rank(other, joined, timeout, result["backend"]))
    return ranks, reports


def silent_rank(other, joined, timeout, backend):
    """The result rank 0 writes for a rank that sent none."""
    if other in joined:
        host = joined[other].get("host")
        status, stage = "did-not-finish", REDUCE
        error = (
            "joined the job but sent no result within {:g} s: it hangs or died in the "
            "collective".format(timeout)
        )
    else:
        host = None
        for info in joined.values():  # a rank of a node whose other ranks joined
            first, count = info.get("first"), info.get("count")
            if isinstance(first, int) and isinstance(count, int) and first <= other < first + count:
                host = info.get("host")
                break
        status, stage = "never-joined", None
        error = "not in the job's rendezvous store within {:g} s".format(timeout)
    return {
        "rank": other,
        "host": host,
        "status": status,
        "stage": stage,
        "backend": backend,
        "error": error,
        "seconds": None,
        "bus_bandwidth_bytes": None,
        "wrong_elements": None,
        "missing": None,
    }


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
        "stage": IMPORT,
        "backend": None,
        "error": None,
        "seconds": None,
        "bus_bandwidth_bytes": None,
        "wrong_elements": None,
        "missing": None,
    }
    begun = time.monotonic()
    try:
        import torch
        import torch.distributed as dist

        result["stage"] = STORE
        store = open_store(dist, rank, world, timeout)
        store.set("report/{}".format(rank), json.dumps(request.get("report")))
        store.set("joined/{}".format(rank), joined_value(rank, host))
    except Exception as exc:  # noqa: BLE001 - the stage's failure is its result
        result["error"] = short(exc)
        say({"self": result, "ranks": [result], "reports": {}, "world_size": world})
        return 0
    try:
        run_rank(torch, dist, store, result, rank, world, timeout, elements)
    except Exception as exc:  # noqa: BLE001
        result["error"] = short(exc)
    store.set("result/{}".format(rank), json.dumps(result))
    if rank != 0:
        say({"self": result, "ranks": [result], "reports": {}, "world_size": world})
        shown_status()
        store.set("shown/{}".format(rank), "1")
        try:  # stay until rank 0 has reported (torchrun stops everyone when one exits)
            store.wait(["done"], timedelta(seconds=3 * timeout))
            if store.get("done") != b"0":
                time.sleep(LINGER)  # rank 0 failed: let torchrun see its status first
        except Exception:  # noqa: BLE001
            pass
        return 0
    ranks, reports = collect(store, world, timeout, begun, result)
    say({"self": result, "ranks": ranks, "reports": reports, "world_size": world})
    status = shown_status()
    # The ranks that sent a result report too; rank 0 exits (and torchrun stops the job
    # when it failed) only once they have, or --timeout has passed.
    others = [
        "shown/{}".format(r["rank"]) for r in ranks if r["rank"] != 0 and r["status"] not in SILENT
    ]
    deadline = time.monotonic() + timeout
    while others and time.monotonic() < deadline and not store.check(others):
        time.sleep(0.1)
    store.set("done", status)
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
