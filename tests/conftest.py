"""Shared pytest setup: CPU DeepSpeed, one thread per process, fixed seeds."""

import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


# -- shared training fixtures (torch imported only by the tests that ask for them) ------------

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def dist():
    """The single-process torch.distributed setup of the DeepSpeed CPU tests (idempotent)."""
    from engine.train.runtime import init_distributed

    return init_distributed()


@pytest.fixture(scope="session")
def mem_data():
    """The in-memory two-domain corpus of ``train_fakes`` (sequence length 32)."""
    from train_fakes import MemData

    return MemData(seq_len=32)
