"""``make checkpoints-hires`` (``bevgen.pretrained.build_hires``): the 128x224 recipe runs ``hires.yaml`` on the
shipped models' frames, resumes an interrupted run, and exports weights without optimizer state where
``shipped("views_hires")`` finds them."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def test_build_hires_trains_hires_config_resumes_and_exports_slim_weights(tmp_path, monkeypatch):
    from bevgen import pretrained
    from runkit.checkpoint import load_checkpoint, save_checkpoint

    work, out, calls = tmp_path / "work", tmp_path / "ship", []
    monkeypatch.setattr(pretrained, "write_training_frames", lambda w: w / "camera_data")

    def fake_train(cmd):  # what `bevgen views train` leaves: both stages with optimizer state
        calls.append(cmd)
        run = work / "views_hires"
        for name in ("tokenizer", "generator"):
            save_checkpoint(run / "checkpoints" / f"{name}.pt", model={"w": torch.ones(3)},
                            optimizer={"state": {}}, config={"image_size": [128, 224]}, step=7, best_metric=1.5)
        (run / "config.yaml").write_text("data:\n  image_size: [128, 224]\n")
        return 0

    monkeypatch.setattr(pretrained.subprocess, "call", fake_train)
    assert pretrained.shipped("views_hires", out) is None
    summary = pretrained.build_hires(work, out)
    cmd = calls[0]
    assert cmd[cmd.index("-c") + 1].endswith("configs/views/hires.yaml") and "--resume" not in cmd
    assert cmd[cmd.index("--data") + 1] == str(work / "camera_data")
    ship = pretrained.shipped("views_hires", out)
    assert ship == out / "views_hires" and (ship / "config.yaml").exists()
    ck = load_checkpoint(ship / "checkpoints" / "generator.pt")
    assert "optimizer" not in ck and ck["step"] == 7 and torch.equal(ck["model"]["w"], torch.ones(3))
    assert set(summary["files"]) == {"views_hires/checkpoints/generator.pt", "views_hires/checkpoints/tokenizer.pt"}
    pretrained.build_hires(work, out)  # a second call continues the run in work
    assert "--resume" in calls[1]


def test_build_hires_reports_a_failed_training(tmp_path, monkeypatch):
    from bevgen import pretrained

    monkeypatch.setattr(pretrained, "write_training_frames", lambda w: w / "camera_data")
    monkeypatch.setattr(pretrained.subprocess, "call", lambda cmd: 1)
    with pytest.raises(RuntimeError, match="training failed"):
        pretrained.build_hires(tmp_path / "work", tmp_path / "ship")
    assert pretrained.shipped("views_hires", tmp_path / "ship") is None
