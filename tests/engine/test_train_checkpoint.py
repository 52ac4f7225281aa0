"""Which checkpoint tag a resume loads: ``latest`` when it is complete, else the newest that is."""

import json

from engine.train.checkpoint import LATEST, MANIFEST, checkpoint_dir, has_checkpoint, is_complete, resume_tag


def _tag(run_dir, step, files=("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"),
         manifest=True):
    tag = checkpoint_dir(run_dir) / f"step{step:08d}"
    tag.mkdir(parents=True)
    for name in files:
        (tag / name).write_bytes(b"x" * (10 + step))
    if manifest:
        (tag / MANIFEST).write_text(json.dumps({name: 10 + step for name in files}))
    return tag


def _latest(run_dir, step):
    (checkpoint_dir(run_dir) / LATEST).write_text(f"step{step:08d}")


def test_latest_is_loaded_when_complete(tmp_path):
    _tag(tmp_path, 4), _tag(tmp_path, 8)
    _latest(tmp_path, 8)
    assert resume_tag(tmp_path) == "step00000008" and has_checkpoint(tmp_path)


def test_a_torn_latest_falls_back_to_the_newest_complete_tag(tmp_path):
    _tag(tmp_path, 4)
    torn = _tag(tmp_path, 8)
    _latest(tmp_path, 8)
    (torn / "zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()  # a shard lost
    assert not is_complete(torn) and resume_tag(tmp_path) == "step00000004"
    (torn / "mp_rank_00_model_states.pt").write_bytes(b"x")  # truncated
    assert resume_tag(tmp_path) == "step00000004"


def test_a_tag_without_its_manifest_is_not_complete(tmp_path):
    _tag(tmp_path, 4)
    _tag(tmp_path, 8, manifest=False)  # killed between the shards and the manifest
    _latest(tmp_path, 4)
    assert resume_tag(tmp_path) == "step00000004"
    _latest(tmp_path, 8)
    assert resume_tag(tmp_path) == "step00000004"


def test_nothing_complete_means_a_fresh_start(tmp_path):
    assert resume_tag(tmp_path) is None
    torn = _tag(tmp_path, 8)
    _latest(tmp_path, 8)
    (torn / "mp_rank_00_model_states.pt").unlink()
    assert resume_tag(tmp_path) is None and not has_checkpoint(tmp_path)


def test_a_checkpoint_saved_before_manifests_is_trusted_as_before(tmp_path):
    _tag(tmp_path, 8, manifest=False)
    assert resume_tag(tmp_path) is None  # no latest: nothing names it
    _latest(tmp_path, 8)
    assert resume_tag(tmp_path) == "step00000008"
