"""Whether a request's images could show nudity: the question before running the NSFW classifier on them.

The classifier (open_nsfw, a ResNet-50 at 224 x 224) costs as much per 64 x 64 image as the 4-step embedded student's
whole denoising, so a server should run it where it can find something. It can't in the plain text-to-image output
of a model whose ``knows.json`` says every training image was rendered by code that draws no nudity
(``nudity_free_training``, set by the embedded model's training code): such a model reproduces its training
distribution and nothing else. Anything that brings other pixels or weights in makes the check necessary again:
an init image (img2img), a ControlNet or IP-Adapter image, or a LoRA (a user's private LoRA is trained on their own
pictures). Any other model, however loaded, is always checked. ``prompts.nsfw_check: always`` checks every image.
"""

from __future__ import annotations

from pathlib import Path

from imageloop.engine.model_knowledge import read_knowledge
from imageloop.engine.recipes import Recipe
from imageloop.engine.request import GenerationRequest


def nsfw_possible(model_path: Path, request: GenerationRequest, recipe: Recipe | None) -> bool:
    """False only for plain text-to-image without LoRAs on a model trained on nudity-free rendered images."""
    knowledge = read_knowledge(model_path) if model_path.is_dir() else None
    if knowledge is None or not knowledge.nudity_free_training:
        return True
    outside_pixels = (request.init_image, request.control_image, request.ip_image)
    return any(image is not None for image in outside_pixels) or bool(request.loras) or bool(
        recipe is not None and recipe.loras)
