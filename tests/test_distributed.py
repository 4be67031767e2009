"""Several processes (torchrun, gloo on the CPU): the same optimisation as one process with the whole
batch, resume from a checkpoint with any number of processes, and files written by rank 0 only."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import child_env

HERE = Path(__file__).parent
CHILD = str(HERE / "ddp_child.py")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(processes: int, *args) -> list[str]:
    if processes == 1:
        return [sys.executable, CHILD, *map(str, args)]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--nnodes=1",
            "--master_addr=127.0.0.1", f"--master_port={_port()}", CHILD, *map(str, args)]


def run(processes: int, *args) -> None:
    subprocess.run(command(processes, *args), check=True, env=child_env(), timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def weights(path: Path) -> dict:
    return torch.load(path)


def assert_close(a: dict, b: dict, atol: float = 1e-5) -> None:
    for key, value in a.items():
        assert torch.allclose(value, b[key], atol=atol, rtol=1e-4), f"{key} differs"


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    run(2, out, 8)
    return out


def test_two_processes_follow_one_process_with_the_whole_batch(two_process_run, tmp_path):
    run(1, tmp_path, 8)
    single = weights(tmp_path / "final-rank0.pt")
    rank0, rank1 = weights(two_process_run / "final-rank0.pt"), weights(two_process_run / "final-rank1.pt")
    assert_close(single, rank0)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # DDP keeps the replicas identical
    untrained = torch.load(tmp_path / "checkpoints" / "ckpt_00000002.pt", weights_only=False)["model"]
    assert any(not torch.allclose(untrained[k], single[k]) for k in single)  # and training moved them


def test_only_rank_0_writes_files(two_process_run):
    assert (two_process_run / "run-rank0" / "metrics.csv").exists()
    assert (two_process_run / "run-rank0" / "config.json").exists()
    assert not (two_process_run / "run-rank1").exists()
    assert sorted(p.name for p in (two_process_run / "checkpoints").iterdir())[-1] == "ckpt_00000008.pt"


def test_a_killed_two_process_run_resumes_to_the_same_weights(two_process_run, tmp_path):
    killed = subprocess.Popen(command(2, tmp_path, 8, "--slow", "0.4"), env=child_env(), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not (tmp_path / "checkpoints" / "ckpt_00000004.pt").exists():
        assert time.time() < deadline and killed.poll() is None, "the run never reached step 4"
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)  # the launcher and both workers
    killed.wait()
    assert not (tmp_path / "final-rank0.pt").exists()
    run(2, tmp_path, 8, "--resume")
    assert_close(weights(two_process_run / "final-rank0.pt"), weights(tmp_path / "final-rank0.pt"))


def test_resume_with_a_different_number_of_processes(two_process_run, tmp_path):
    import shutil

    (tmp_path / "checkpoints").mkdir()
    shutil.copy(two_process_run / "checkpoints" / "ckpt_00000004.pt", tmp_path / "checkpoints")
    run(1, tmp_path, 8, "--resume")  # started with 2 processes, finished with 1
    assert_close(weights(two_process_run / "final-rank0.pt"), weights(tmp_path / "final-rank0.pt"))


def test_two_processes_follow_one_process_for_the_batchnorm_small_unet(tmp_path):
    run(1, tmp_path / "one", 6, "--model", "small")
    run(2, tmp_path / "two", 6, "--model", "small")
    single, rank0 = weights(tmp_path / "one" / "final-rank0.pt"), weights(tmp_path / "two" / "final-rank0.pt")
    assert_close(single, rank0)  # running statistics included: synchronised BatchNorm sees the global batch
    assert any("running_mean" in key for key in single)


def test_with_dropout_each_process_draws_its_own_masks_as_one_process_would_per_slice(tmp_path):
    run(2, tmp_path / "two", 6, "--dropout", "0.3")
    run(1, tmp_path / "emulated", 6, "--dropout", "0.3", "--emulate-ranks", "2")
    run(1, tmp_path / "shared", 6, "--dropout", "0.3", "--emulate-ranks", "1")
    two = weights(tmp_path / "two" / "final-rank0.pt")
    assert_close(two, weights(tmp_path / "emulated" / "final-rank0.pt"))
    shared = weights(tmp_path / "shared" / "final-rank0.pt")
    assert any(not torch.allclose(two[k], shared[k], atol=1e-5) for k in two)  # the masks really differ


def test_a_failed_checkpoint_write_on_rank_0_stops_every_rank(tmp_path):
    started = time.time()
    done = subprocess.run(command(2, tmp_path, 8, "--fail-save"), env=child_env(), timeout=120,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert done.returncode != 0 and "No space left on device" in done.stderr
    assert "could not write the checkpoint" in done.stderr  # rank 1 says why it stopped
    assert time.time() - started < 110  # and nobody waited in a barrier until the timeout


def test_every_collective_runs_on_the_training_device_and_batchnorm_makes_two(tmp_path):
    """NCCL has no CPU tensors: a collective on any other device than the process's own training device
    kills a multi-GPU run at its first checkpoint ("No backend type associated with device type cpu").
    Here every tensor the trainer hands to a collective (the failure flag, the loss mean, synchronised
    BatchNorm, the barriers) is recorded: all on the training device, named by the trainer's context."""
    import json

    run(2, tmp_path, 4, "--model", "small", "--record-collectives")
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"collectives-rank{rank}.json").read_text())
        assert seen["context_device"] == seen["training_device"] == "cpu"  # the context knows its device
        assert seen["all_reduce"] and set(seen["all_reduce"]) == {seen["training_device"]}
        assert seen["batchnorm_collectives_per_forward"] == 2  # the sum and the centred squares; no count


def test_a_collective_without_a_device_is_refused_before_it_reaches_the_backend():
    from ddpm_lib.engine.distributed import DistributedContext, all_ok, mean_over_processes

    two_ranks_no_device = DistributedContext(rank=0, world_size=2, device=None)
    with pytest.raises(ValueError, match="NCCL has no CPU tensors"):
        all_ok(True, two_ranks_no_device)
    with pytest.raises(ValueError, match="NCCL has no CPU tensors"):
        mean_over_processes(torch.ones(2), two_ranks_no_device)
