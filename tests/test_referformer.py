"""ReferFormer from registry parts (issue 27): the released checkpoint layouts load strictly, the parts
keep their contracts, the criterion matches the right query, the CPU-sized model trains on the
synthetic set and every query reaches the COCO protocol, and a clip's frames are all predicted and
scored. (Equal outputs to the release on the same weights: benchmarks/oracle_released_referformer.py,
which needs a checkout of the release.)"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from lvas.config import load_config
from lvas.models import build_model
from lvas.models.layouts.base import find_layout, load_layout
from tests.data_writers import write_roberta
from tests.released_layout import referformer_state_dict

ROOT = Path(__file__).resolve().parents[1]
YAMLS = {"r50": "referformer_r50.yaml", "swin_t": "referformer_swin_t.yaml", "swin_b": "referformer_paper.yaml"}


@pytest.fixture(scope="module")
def roberta768(tmp_path_factory):
    """RoBERTa of the width ReferFormer's resizer takes (768), one layer, and its tokenizer."""
    return write_roberta(tmp_path_factory.mktemp("roberta768") / "roberta", hidden=768, layers=1)


@pytest.fixture(scope="module")
def roberta64(tmp_path_factory):
    return write_roberta(tmp_path_factory.mktemp("roberta64") / "roberta", hidden=64, layers=1)


def _paper_model(backbone: str, roberta: Path, *extra: str):
    cfg = load_config(ROOT / "experiments" / YAMLS[backbone],
                      [f"model.text.path={roberta}", f"model.text.tokenizer_path={roberta}", *extra])
    return cfg, build_model(cfg, load_weights=False)


@pytest.mark.parametrize("wrapper", ["plain", "module.", "checkpoint.pth"])
@pytest.mark.parametrize("backbone", list(YAMLS))
def test_released_layouts_load_strictly(backbone, wrapper, roberta768, tmp_path):
    """Every key of a state dict written in the released layout (ResNet-50, Video-Swin-T, -B; bare, saved
    from DistributedDataParallel, or in the release's checkpoint file with its argparse options) lands on
    one of ours with its shape and every one of ours is covered; spot checks that the tensors are
    where the layout says."""
    from transformers import RobertaModel

    from lvas.engine.checkpoint import read_torch_file

    state = referformer_state_dict(backbone, RobertaModel.from_pretrained(str(roberta768)).state_dict())
    if wrapper == "module.":
        state = {f"module.{k}": v for k, v in state.items()}
    if wrapper == "checkpoint.pth":  # how main.py saves: read back safely (no code runs), options included
        path = tmp_path / "checkpoint.pth"
        torch.save({"model": state, "epoch": 5, "args": argparse.Namespace(backbone=backbone, lr=1e-4)}, path)
        state = read_torch_file(path)
    _, model = _paper_model(backbone, roberta768)
    layout = find_layout(state)
    assert layout is not None and layout.name == "ReferFormer"
    load_layout(model, state, layout, "released ReferFormer")
    flat = state.get("model", state)
    flat = {k.removeprefix("module."): v for k, v in flat.items()}
    ours = model.state_dict()
    assert torch.equal(ours["decoder.transformer.level_embed"], flat["transformer.level_embed"])
    assert torch.equal(ours["decoder.mask_head.controller.layers.2.weight"], flat["controller.layers.2.weight"])
    assert torch.equal(ours["text.resizer.fc.weight"], flat["resizer.fc.weight"])
    if backbone == "r50":
        assert torch.equal(ours["spatial.stages.2.0.conv1.weight"], flat["backbone.0.body.layer2.0.conv1.weight"])
    else:
        assert torch.equal(ours["temporal.stages.4.body.1.1.mlp.3.weight"],
                           flat["backbone.0.body.layers.3.blocks.1.mlp.fc2.weight"])
        assert torch.equal(ours["temporal.stages.3.body.0.reduction.weight"],
                           flat["backbone.0.body.downsamples.1.reduction.weight"])
    bad = dict(flat)
    bad["transformer.level_embed"] = torch.zeros(3, 256)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_layout(model, bad, layout, "released ReferFormer")


def _tiny_cfg(roberta: Path | None = None, **over):
    base = ["data.frames=3", "data.size=64", "model.decoder.queries=3"]
    if roberta is not None:  # RoBERTa in place of the CPU config's GRU
        base += [f"model.text={{name: roberta, path: {roberta}, channels: 64, frozen: true, tokenizer: subword, "
                 f"tokenizer_path: {roberta}, max_words: 24}}"]
    return load_config(ROOT / "experiments" / "referformer_cpu.yaml", base + [f"{k}={v}" for k, v in over.items()])


def test_the_model_gives_queries_boxes_and_masks_per_frame(roberta64):
    """Shapes, finite values, the chosen query's masks, and every parameter but the frozen RoBERTa's
    receives a gradient through the criterion."""
    from lvas.data.vocab import SubwordVocabulary
    from lvas.engine.inference import clip_targets
    from lvas.models.losses import build_loss

    torch.manual_seed(0)
    cfg = _tiny_cfg(roberta64, **{"model.decoder.frames": "all"})
    model = build_model(cfg)
    vocab = SubwordVocabulary(str(roberta64))
    enc = [vocab.encode(q, 24) for q in ("the red square moving left", "a blue dot")]
    tokens, mask = torch.stack([e[0] for e in enc]), torch.stack([e[1] for e in enc])
    clip = torch.rand(2, 3, 3, 64, 64)
    out = model(clip, tokens, mask)
    assert out["pred_logits"].shape == (2, 3, 3, 1) and out["pred_boxes"].shape == (2, 3, 3, 4)
    assert out["pred_masks"].shape == (2, 3, 3, 16, 16) and len(out["aux_outputs"]) == 1
    assert out["logits"].shape == (2, 3, 64, 64) and out["frames"] == [0, 1, 2] and out["scores"].shape == (2, 3)
    assert "candidates" not in out  # training mode: the loss reads the raw outputs
    chosen = out["pred_masks"][torch.arange(2), :, out["query"]]  # (B, T, h, w)
    small = torch.nn.functional.interpolate(out["logits"], scale_factor=0.25, mode="bilinear", align_corners=False)
    assert torch.allclose(small[:, :, 4:12, 4:12], chosen[:, :, 4:12, 4:12], atol=0.25)  # the chosen query, x4
    target = {"clip": clip, "target": [torch.zeros(3, 64, 64) for _ in range(2)], "target_frames": [[0, 1, 2]] * 2}
    target["target"][0][:, 10:30, 20:40] = 1
    target["target"][1][1, 40:50, 5:25] = 1
    loss = build_loss(cfg)(out, clip_targets(out, target, torch.device("cpu")))
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any(n.startswith("text.text_encoder.") for n in trainable)  # frozen, as --freeze_text_encoder
    no_grad = [n for n in trainable if model.get_parameter(n).grad is None]
    assert not no_grad, no_grad[:8]
    model.eval()
    with torch.no_grad():
        ev = model(clip, tokens, mask)
    assert ev["candidates"]["logits"].shape == (2, 3, 3, 64, 64) and ev["candidates"]["scores"].shape == (2, 3, 3)


def test_padding_tokens_change_nothing(roberta64):
    """RoBERTa's padding (as long as the query or longer) is masked everywhere it could enter."""
    from lvas.data.vocab import SubwordVocabulary

    torch.manual_seed(0)
    model = build_model(_tiny_cfg(roberta64)).eval()
    vocab = SubwordVocabulary(str(roberta64))
    clip = torch.rand(1, 3, 3, 64, 64)
    with torch.no_grad():
        outs = [model(clip, *(t[None] for t in vocab.encode("the man on the left", n)))["pred_masks"] for n in (24, 40)]
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def test_the_criterion_matches_the_query_that_fits():
    """Of three queries one has the ground truth's mask, box and a high score: it is matched in every
    layer, and the loss falls as the other queries' share of the match cost cannot move it."""
    from lvas.models.losses.referformer import mask_boxes, match

    torch.manual_seed(0)
    b, t, q, s = 2, 3, 3, 32
    gt = torch.zeros(b, t, s, s)
    gt[0, :, 4:20, 8:24] = 1
    gt[1, :2, 10:30, 2:12] = 1  # not visible in the last frame
    valid = (gt.flatten(2) > 0).any(-1)
    boxes = mask_boxes(gt.flatten(0, 1)).view(b, t, 4)
    small = gt[:, :, 2::4, 2::4]
    for right in (0, 2):
        out = {"pred_logits": torch.randn(b, t, q, 1) - 2, "pred_boxes": torch.rand(b, t, q, 4),
               "pred_masks": torch.randn(b, t, q, s // 4, s // 4)}
        out["pred_logits"][:, :, right] = 4.0
        out["pred_boxes"][:, :, right] = boxes.clamp(min=0.01)
        out["pred_masks"][:, :, right] = small * 20 - 10
        costs = {"class": 2.0, "bbox": 5.0, "giou": 2.0, "mask": 2.0, "dice": 5.0}
        assert match(out, small, boxes, valid, costs).tolist() == [right, right]
    # boxes of the masks: (cx, cy, w, h) from the extreme pixel indices, normalised
    assert torch.allclose(boxes[0, 0], torch.tensor([(8 + 23) / 2 / s, (4 + 19) / 2 / s, 15 / s, 15 / s]))
    assert boxes[1, 2].abs().sum() == 0


def test_the_loss_prefers_the_right_mask():
    from lvas.models.losses import build_loss

    cfg = load_config(ROOT / "experiments" / "referformer_cpu.yaml")
    loss_fn = build_loss(cfg)
    gt = torch.zeros(1, 2, 32, 32)
    gt[0, :, 8:24, 8:24] = 1
    good = {"pred_logits": torch.full((1, 2, 2, 1), 3.0), "pred_boxes": torch.full((1, 2, 2, 4), 0.5),
            "pred_masks": (gt[:, :, 2::4, 2::4] * 20 - 10)[:, :, None].repeat(1, 1, 2, 1, 1), "aux_outputs": []}
    bad = {**good, "pred_masks": -good["pred_masks"]}
    targets = {"masks": gt, "annotated": torch.ones(1, 2, dtype=torch.bool)}
    assert loss_fn(good, targets) < loss_fn(bad, targets)
    with pytest.raises(ValueError, match="train.loss: referformer matches queries"):
        loss_fn({"logits": torch.zeros(1, 2, 32, 32)}, targets)


def test_deformable_attention_samples_where_it_should():
    """With zero offsets every point samples the reference point itself: the output is the projected
    value bilinearly interpolated there (checked against grid_sample), whatever the weights."""
    from lvas.models.transformers.deformable import MSDeformAttn

    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, levels=2, heads=2, points=3)
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()
        attn.attention_weights.weight.normal_()
    shapes = [(6, 8), (3, 4)]
    values = torch.randn(1, 6 * 8 + 3 * 4, 16)
    ref = torch.rand(1, 5, 1, 2).expand(1, 5, 2, 2)
    query = torch.randn(1, 5, 16)
    out = attn(query, ref, values, shapes)
    v = attn.value_proj(values)
    expect = 0
    w = torch.softmax(attn.attention_weights(query).view(1, 5, 2, 6), -1).view(1, 5, 2, 2, 3).sum(-1)  # per level
    start = 0
    for lvl, (h, wd) in enumerate(shapes):
        grid = v[:, start:start + h * wd].transpose(1, 2).reshape(1, 16, h, wd)
        sampled = torch.nn.functional.grid_sample(grid, (2 * ref[:, :, lvl] - 1)[:, :, None], align_corners=False)
        sampled = sampled[..., 0].transpose(1, 2).view(1, 5, 2, 8)  # (1, Q, heads, D)
        expect = expect + sampled * w[:, :, :, lvl, None]
        start += h * wd
    assert torch.allclose(out, attn.output_proj(expect.reshape(1, 5, 16)), atol=1e-5)


def test_the_cpu_model_trains_and_every_query_is_a_coco_detection(synth, tmp_path):
    """referformer_cpu on the synthetic set: losses fall, the selected model is scored, and protocol coco
    submits every query of every clip (coco_top1 one), with the model's own scores."""
    from lvas.data import build_dataset
    from lvas.engine.evaluate import Scores
    from lvas.engine.inference import forward, scored_frames
    from lvas.engine.setup import loader
    from lvas.engine.trainer import TrackOptions, train_experiment
    from lvas.engine.checkpoint import load_checkpoint, model_from_checkpoint

    cfg = load_config(ROOT / "experiments" / "referformer_cpu.yaml",
                      [f"data.root={synth}", "data.frames=3", "data.size=48", "train.epochs=3", "train.batch_size=4",
                       "data.workers=0", "tracking.overlays=0", "model.decoder.queries=3"])
    result, _ = train_experiment(cfg, tmp_path / "run", progress=False, track=TrackOptions(active=False))
    losses = [h["train_loss"] for h in result.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert {"coco", "coco_top1", "paper", "strict"} <= set(result.protocols)
    _, model, vocab = model_from_checkpoint(load_checkpoint(result.checkpoint))
    model.eval()
    test = build_dataset(cfg, "test", vocab=vocab)
    full, top1 = Scores("coco", ("segmentation",)), Scores("coco_top1", ("segmentation",))
    n = 0
    with torch.no_grad():
        for batch in loader(test, cfg, batch_size=4):
            outputs = forward(model, batch, torch.device("cpu"))
            for lg, gt, meta in scored_frames(outputs, batch):
                assert len(meta["candidate_scores"]) == 3 and 0 < meta["model_score"] < 1
                full.process(lg, gt, meta)
                top1.process(lg, gt, meta)
                n += 1
    assert len(full.evaluators[0].detections) == 3 * n and len(top1.evaluators[0].detections) == n
    assert full.compute()["n"] == top1.compute()["n"] == n == result.protocols["coco"]["n"]


def test_every_frame_of_a_clip_is_predicted_trained_and_scored(tmp_path):
    """decoder.frames: all on a set annotated in every frame (data.dataset.targets: clip): the loss sees
    all T frames at once, evaluation scores T frames per sample."""
    from lvas.data.synthetic import generate
    from lvas.engine.trainer import TrackOptions, train_experiment

    root = tmp_path / "synth"
    generate(root, videos=5, frames=4, size=32, progress=False, annotate="all")
    cfg = load_config(ROOT / "experiments" / "referformer_cpu.yaml",
                      [f"data.root={root}", "data.frames=3", "data.size=32", "train.epochs=1", "train.batch_size=4", "train.limit_batches=2",
                       "data.workers=0", "tracking.overlays=0", "model.decoder.queries=2", "model.decoder.frames=all",
                       "data.dataset={name: synth, targets: clip}"])
    result, _ = train_experiment(cfg, tmp_path / "run", progress=False, track=TrackOptions(active=False))
    from lvas.data import build_dataset

    samples = len(build_dataset(cfg, "test"))
    assert result.test["n"] == 3 * samples  # every frame of every test clip, not only its middle one
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))


def test_a_whole_ref_youtube_vos_video_is_one_clip_with_one_query(tmp_path, capsys):
    """data.dataset: {name: ytvos, clips: video}: each held-out expression is one clip of its video's listed
    frames; the model predicts every one, keeps one query for the whole video, and each frame is scored
    (J&F per expression) and written in the submission layout."""
    import zipfile

    from lvas.cli import main
    from lvas.data import build_dataset
    from tests.data_writers import write_ytvos

    root = tmp_path / "ytvos"
    write_ytvos(root, n_train=4, n_valid=2, h=32, w=48, n_listed=5)
    over = [f"data.root={root}", "data.dataset={name: ytvos, clips: video}", "data.train_split=train",
            "data.test_split=heldout",
            "data.frames=3", "data.size=32", "train.epochs=1", "train.batch_size=4", "train.limit_batches=2", "data.workers=0",
            "tracking.overlays=0", "model.decoder.queries=2", "model.decoder.frames=all", "train.protocol=strict"]
    cfg = load_config(ROOT / "experiments" / "referformer_cpu.yaml", over)
    held = build_dataset(cfg, "heldout")
    assert len(held) == held.index["expression"].count() and held.variable_clips
    item = held[0]
    assert item["clip"].shape[1] == 5 and item["target_frames"] == [2, 0, 1, 3, 4]
    from lvas.engine.trainer import TrackOptions, train_experiment

    result, _ = train_experiment(cfg, tmp_path / "run", progress=False, track=TrackOptions(active=False))
    assert result.test["n"] == 5 * len(held) and result.test["expressions"] == len(held)
    assert 0 <= result.test["JF"] <= 100
    out = tmp_path / "sub.zip"
    assert main(["eval", str(result.checkpoint), "--split", "valid", "--submission", str(out), "-q"]) == 0
    names = zipfile.ZipFile(out).namelist()
    assert len(names) == 2 * 2 * 5 and "Annotations/v001vid/1/00020.png" in names


@pytest.mark.parametrize("rows", ["cstm_in_referformer", "query_decoder_on_cstm"])
def test_the_cross_generation_ablations_train_small(synth, tmp_path, rows):
    """The two ablation sweeps' rows, CPU-sized, one epoch on the synthetic set (their paper-size rows
    run on meta in test_meta_device): CMAM at stages 3-5 and LGFS between two streams inside
    ReferFormer; ReferFormer's decoder and criterion on CSTM's encoders, CMAMs and LGFS."""
    from lvas.engine.trainer import TrackOptions, train_experiment

    small = [f"data.root={synth}", "data.frames=4", "data.size=48", "train.epochs=1", "train.batch_size=4", "train.limit_batches=2",
             "data.workers=0", "tracking.overlays=0"]
    text = "model.text={name: lstm, embedding: learned, embed_dim: 32, hidden: 64, vocab_size: 200}"
    if rows == "cstm_in_referformer":
        cfg = load_config(ROOT / "experiments" / "referformer_cpu.yaml", small + [
            "model.decoder.queries=3", "model.mode=both", "model.spatial.name=tiny2d", "model.fusion=lgfs", text,
            "model.cmam={name: cmam_released, stages: [5, 4, 3], channels: 32}"])
    else:
        cfg = load_config(ROOT / "experiments" / "cpu_small.yaml", small + [text, "train.loss=referformer",
            "train.protocol=coco", "model.decoder={name: referformer, hidden: 64, queries: 3, enc_layers: 2, "
            "dec_layers: 2, ffn: 128, heads: 4, enc_points: 2, dec_points: 2, mask_dim: 32, frames: target}"])
    result, _ = train_experiment(cfg, tmp_path / "run", progress=False, track=TrackOptions(active=False))
    assert all(h["train_loss"] == h["train_loss"] for h in result.history)
    assert "mAP" in result.protocols["coco"] and result.protocols["coco"]["n"] > 0
    from lvas.engine.checkpoint import load_checkpoint

    state = load_checkpoint(result.checkpoint)["model"]
    assert any(k.startswith("cmam.") for k in state) and any("fusion" in k for k in state)
