"""`imageloop train decoder`: a wider autoencoder fitted to the embedded model's latent space."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from imageloop.cli.groups import train_app
from imageloop.config import EMBEDDED_MODEL_DIR, load_settings
from imageloop.errors import InvalidRequestError


@train_app.command("decoder")
def train_decoder(
    data: Annotated[Path, typer.Option(help="Dataset folder; rendered deterministically when missing.")],
    out: Annotated[Path, typer.Option(help="Write a copy of the model folder with the new autoencoder here.")],
    model: Annotated[Path, typer.Option(help="The exported model whose autoencoder is widened.")] = EMBEDDED_MODEL_DIR,
    checkpoints: Annotated[Path | None, typer.Option(
        help="Checkpoint folder (default: <data_dir>/checkpoints/decoder).")] = None,
    channels: Annotated[str, typer.Option(help="Widths of the new autoencoder, comma-separated.")] = "32,64,128",
    decoder_minutes: Annotated[float, typer.Option(min=0, help="Total decoder training minutes.")] = 30.0,
    encoder_minutes: Annotated[float, typer.Option(min=0, help="Total encoder fitting minutes.")] = 5.0,
    threads: Annotated[int, typer.Option(min=1, help="Torch CPU threads.")] = 1,
) -> None:
    """Fit a wider autoencoder to the model's latent space (the UNet is untouched) and export a model with it."""
    import torch

    from imageloop.training.base.decoder import DecoderConfig, export_with_vae, train_wide_autoencoder

    try:
        widths = tuple(int(part) for part in channels.split(","))
    except ValueError:
        raise InvalidRequestError("--channels", "must be comma-separated integers", value=channels) from None
    if len(widths) != 3 or any(w <= 0 or w % 8 for w in widths):
        raise InvalidRequestError("--channels", "needs three positive multiples of 8 (one per resolution)",
                                  value=channels)
    torch.set_num_threads(threads)
    cfg: Any = DecoderConfig(model_dir=model, data_dir=data,
                             checkpoint_dir=checkpoints or load_settings().data_dir / "checkpoints" / "decoder",
                             channels=widths, decoder_minutes=decoder_minutes, encoder_minutes=encoder_minutes)
    vae = train_wide_autoencoder(cfg)
    export_with_vae(model, vae, out)
    typer.echo(f"exported {model.name} with a {channels} autoencoder to {out}")
