"""The subject-weighted diffusion loss of the embedded model and the masks it is computed from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imageloop.errors import TrainingError
from imageloop.training.base.dataset import build_dataset, render_one, render_one_mask, subject_masks
from imageloop.training.base.model import ModelSize
from imageloop.training.base.train import (
    BaseTrainConfig,
    DiffusionTrainer,
    _prepare_masks,
    _save_size,
    load_or_build_tokenizer,
)
from tests.training.base_helpers import needs_emoji_font
from tests.training.test_base_train import _labels

TINY = ModelSize.tiny()


@needs_emoji_font
def test_masks_replay_the_dataset_and_cover_the_subject(tmp_path: Path) -> None:
    image, mask = render_one_mask(0, 3)
    assert np.array_equal(image, render_one(0, 3)[0])
    assert mask.shape == (64, 64) and 0.0 < mask.mean() < 0.6 and mask.max() == pytest.approx(1.0)
    data = build_dataset(tmp_path / "data", 6, seed=0)
    masks = subject_masks(data, 16)
    assert masks.shape == (6, 16, 16) and masks.dtype == np.float16
    assert np.allclose(masks[3], mask.reshape(16, 4, 16, 4).mean(axis=(1, 3)), atol=1e-3)

    cfg = BaseTrainConfig(data_dir=tmp_path / "data", checkpoint_dir=tmp_path / "ckpt")
    cfg.checkpoint_dir.mkdir()
    cached = _prepare_masks(cfg, data, 16)
    assert (cfg.checkpoint_dir / "subject_masks.npy").is_file() and np.array_equal(cached, masks)

    data.images = np.array(data.images)
    data.images[2, 10, 10] ^= 1  # a dataset not rendered by this code
    with pytest.raises(TrainingError, match="image 2 of the dataset differs"):
        subject_masks(data, 16)


def _trainer(tmp_path: Path, weight: float, masks: np.ndarray | None) -> DiffusionTrainer:
    cfg = BaseTrainConfig(data_dir=tmp_path, checkpoint_dir=tmp_path, batch_size=4, size=TINY,
                          subject_loss_weight=weight)
    _save_size(tmp_path, TINY)
    latents = np.random.default_rng(1).standard_normal((8, TINY.latent_channels, 16, 16)).astype(np.float16)
    return DiffusionTrainer(cfg, load_or_build_tokenizer(tmp_path), latents, _labels(8), 1.0, TINY,
                            subject_masks=masks)


def test_loss_weights_only_the_masked_pixels(tmp_path: Path) -> None:
    masks = np.zeros((8, 16, 16), np.float16)
    masks[:, :8] = 1.0  # the top half is "subject"
    trainer = _trainer(tmp_path, 3.0, masks)
    pred, target = torch.zeros(2, TINY.latent_channels, 16, 16), torch.zeros(2, TINY.latent_channels, 16, 16)
    pred[:, :, 8:] = 1.0  # an error in the background only
    background = float(trainer._loss(pred, target, np.array([0, 1])))
    assert background == pytest.approx(0.5)  # unweighted there: half the pixels wrong by 1
    pred.zero_()
    pred[:, :, :8] = 1.0  # the same error on the subject
    assert float(trainer._loss(pred, target, np.array([0, 1]))) == pytest.approx(4 * background)
    plain = _trainer(tmp_path, 0.0, masks)
    assert float(plain._loss(pred, target, np.array([0, 1]))) == pytest.approx(background)
    assert np.isfinite(trainer.train_step())


def test_subject_head_learns_the_caption_subject_and_resumes(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, 0.0, None)
    trainer.cfg.subject_text_loss_weight = 1.0
    rows = _labels(8)
    texts = trainer.captions(rows, np.random.default_rng(3))
    texts[0] = ""  # a dropped caption names no subject: left out of the head's loss
    ids = trainer.tokenize(texts)
    opt = torch.optim.Adam([*trainer.text_encoder.parameters(), *trainer.subject_probe.parameters()], lr=3e-3)
    first = None
    for _ in range(40):
        loss = trainer.subject_text_loss(ids, trainer.text_encoder(ids).last_hidden_state, rows, texts)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first and trainer.last_probe_accuracy == 1.0
    none = trainer.subject_text_loss(ids[:1], trainer.text_encoder(ids[:1]).last_hidden_state, rows[:1], [""])
    assert float(none) == 0.0

    trainer.train_step()
    state = trainer.state_dict()
    again = _trainer(tmp_path, 0.0, None)
    again.load_state_dict(state)
    assert torch.equal(again.subject_probe.weight, trainer.subject_probe.weight)
    del state["subject_probe"], state["probe_optimizer"]  # a checkpoint from before the head
    _trainer(tmp_path, 0.0, None).load_state_dict(state)
