"""Weighted, chunked prompt conditioning on tiny random SD1.5 and SDXL pipelines."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from imageloop.engine.conditioning import (
    COMMA_BACKTRACK,
    MEAN_TOLERANCE,
    EncodedPrompt,
    batch_for_pipeline,
    encode_prompt,
    pair_for_pipeline,
    tokenize_prompt,
)
from imageloop.errors import InvalidRequestError, UnsupportedModelError
from tests.tiny import MAX_LENGTH, TEXT_HIDDEN, TINY_SIZE, TINY_WORDS, make_tokenizer, sd15_pipeline, sdxl_pipeline

CHUNK = MAX_LENGTH - 2


@pytest.fixture(scope="module")
def sd15() -> Any:
    return sd15_pipeline()


@pytest.fixture(scope="module")
def sdxl() -> Any:
    return sdxl_pipeline()


def _single_token_words() -> tuple[str, ...]:
    tokenizer = make_tokenizer()
    return tuple(w for w in TINY_WORDS if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1)


SINGLE_TOKEN_WORDS = _single_token_words()


def _words(count: int, offset: int = 0) -> list[str]:
    """``count`` words of one token each (cycling through the tiny vocabulary)."""
    return [SINGLE_TOKEN_WORDS[(offset + i) % len(SINGLE_TOKEN_WORDS)] for i in range(count)]


def _run(pipe: Any, **kwargs: Any) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(0)
    out = pipe(num_inference_steps=2, height=TINY_SIZE, width=TINY_SIZE, generator=generator, output_type="np",
               **kwargs)
    return np.asarray(out.images)


# --- equality with diffusers when nothing is weighted -------------------------------------------------------


def test_unweighted_equals_diffusers_sd15(sd15: Any) -> None:
    ours = encode_prompt(sd15, "a photo of a cat, red sky")
    theirs, _ = sd15.encode_prompt("a photo of a cat, red sky", "cpu", 1, False)
    assert ours.pooled is None
    assert ours.embeds.shape == (1, MAX_LENGTH, TEXT_HIDDEN)
    torch.testing.assert_close(ours.embeds, theirs, rtol=0, atol=1e-6)


def test_unweighted_equals_diffusers_sdxl(sdxl: Any) -> None:
    ours = encode_prompt(sdxl, "a photo of a cat, red sky")
    theirs, _, pooled, _ = sdxl.encode_prompt(
        "a photo of a cat, red sky", device="cpu", do_classifier_free_guidance=False
    )
    assert ours.embeds.shape == (1, MAX_LENGTH, 2 * TEXT_HIDDEN)
    assert ours.pooled is not None and ours.pooled.shape == (1, TEXT_HIDDEN)
    torch.testing.assert_close(ours.embeds, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.pooled, pooled, rtol=0, atol=1e-6)


def test_empty_prompt_equals_diffusers(sd15: Any) -> None:
    theirs, _ = sd15.encode_prompt("", "cpu", 1, False)
    torch.testing.assert_close(encode_prompt(sd15, "").embeds, theirs, rtol=0, atol=1e-6)


# --- weights ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pipe_name", ["sd15", "sdxl"])
def test_higher_weight_moves_the_token_further(pipe_name: str, request: pytest.FixtureRequest) -> None:
    pipe = request.getfixturevalue(pipe_name)
    cat = 1 + 4  # start token, then "a photo of a", then "cat"
    plain = encode_prompt(pipe, "a photo of a cat").embeds
    distances = [
        float((encode_prompt(pipe, f"a photo of a (cat:{w})").embeds[0, cat] - plain[0, cat]).norm())
        for w in (1.2, 1.5)
    ]
    assert 0 < distances[0] < distances[1]
    # The other prompt tokens move far less than the weighted one.
    weighted = encode_prompt(pipe, "a photo of a (cat:1.5)").embeds
    assert float((weighted[0, 1] - plain[0, 1]).norm()) < distances[1] / 2


def test_brackets_equal_explicit_weight(sd15: Any) -> None:
    torch.testing.assert_close(
        encode_prompt(sd15, "a photo of a ((cat))").embeds, encode_prompt(sd15, "a photo of a (cat:1.21)").embeds
    )


def test_weighting_restores_each_chunk_mean(sdxl: Any) -> None:
    weighted = encode_prompt(sdxl, "a photo of a (cat:1.5) [dog]").embeds
    same_tokens = encode_prompt(sdxl, "a photo of a cat dog").embeds
    assert not torch.allclose(weighted, same_tokens)
    for half in (slice(0, TEXT_HIDDEN), slice(TEXT_HIDDEN, None)):  # each encoder is rescaled on its own
        assert float(weighted[..., half].mean()) == pytest.approx(float(same_tokens[..., half].mean()), rel=1e-4)
    # The mean of the weighted values alone differs: the rescaling really did something.
    cat = 5
    plain_cat = same_tokens[0, cat]
    assert not torch.allclose(weighted[0, cat], plain_cat * 1.5)


def test_zero_mean_chunk_is_scaled_but_not_rescaled(sd15: Any) -> None:
    # The tiny SD1.5 encoder's untrained final layer norm gives every token a zero mean: the ratio would be noise.
    plain = encode_prompt(sd15, "a photo of a cat").embeds
    assert abs(float(plain.mean())) < MEAN_TOLERANCE * float(plain.abs().mean())
    weighted = encode_prompt(sd15, "a photo of a (cat:1.5)").embeds
    torch.testing.assert_close(weighted[0, 5], plain[0, 5] * 1.5)
    torch.testing.assert_close(weighted[0, :5], plain[0, :5])


def test_context_weighting_without_weights_is_the_plain_encoding(sd15: Any) -> None:
    torch.testing.assert_close(encode_prompt(sd15, "a photo of a cat", "context").embeds,
                               encode_prompt(sd15, "a photo of a cat").embeds, rtol=0, atol=0)


def test_context_weight_zero_is_the_prompt_with_the_words_padded_out(sd15: Any) -> None:
    tokenizer = sd15.tokenizer
    assert tokenizer(tokenizer.pad_token, add_special_tokens=False)["input_ids"] == [tokenizer.pad_token_id]
    dropped = encode_prompt(sd15, "a photo of a (cat:0) sky", "context").embeds
    padded = encode_prompt(sd15, f"a photo of a {tokenizer.pad_token} sky").embeds
    torch.testing.assert_close(dropped, padded, rtol=0, atol=1e-5)


def test_context_weight_scales_the_difference_the_words_make(sd15: Any) -> None:
    plain = encode_prompt(sd15, "a photo of a cat sky").embeds
    without = encode_prompt(sd15, "a photo of a (cat:0) sky", "context").embeds
    for weight in (0.5, 1.5, 2.0):
        weighted = encode_prompt(sd15, f"a photo of a (cat:{weight}) sky", "context").embeds
        torch.testing.assert_close(weighted, plain + (weight - 1.0) * (plain - without), rtol=0, atol=1e-5)
    # Causal encoder: tokens before the weighted word keep their states, the word and the tokens after it move.
    weighted = encode_prompt(sd15, "a photo of a (cat:1.5) sky", "context").embeds
    torch.testing.assert_close(weighted[0, :5], plain[0, :5])
    assert not torch.allclose(weighted[0, 6], plain[0, 6])
    # A1111's weighting leaves the word after the weighted one alone (this encoder's chunk means are ~0).
    torch.testing.assert_close(encode_prompt(sd15, "a photo of a (cat:1.5) sky").embeds[0, 6], plain[0, 6])


def test_context_weighting_adds_the_effects_of_each_weight(sdxl: Any) -> None:
    plain = encode_prompt(sdxl, "a photo of a cat dog")
    cat_only = encode_prompt(sdxl, "a photo of a (cat:1.5) dog", "context").embeds
    dog_only = encode_prompt(sdxl, "a photo of a cat (dog:0.5)", "context").embeds
    both = encode_prompt(sdxl, "a photo of a (cat:1.5) (dog:0.5)", "context")
    torch.testing.assert_close(both.embeds, cat_only + dog_only - plain.embeds, rtol=0, atol=1e-5)
    assert both.pooled is not None and plain.pooled is not None
    torch.testing.assert_close(both.pooled, plain.pooled)  # the pooled embedding is the unweighted prompt's


def test_sdxl_weights_change_both_halves_and_keep_pooled(sdxl: Any) -> None:
    plain = encode_prompt(sdxl, "a photo of a cat")
    weighted = encode_prompt(sdxl, "a photo of a (cat:1.5)")
    half = TEXT_HIDDEN
    assert not torch.equal(plain.embeds[..., :half], weighted.embeds[..., :half])
    assert not torch.equal(plain.embeds[..., half:], weighted.embeds[..., half:])
    assert plain.pooled is not None and weighted.pooled is not None
    torch.testing.assert_close(plain.pooled, weighted.pooled)  # A1111 pools the unweighted output


# --- chunking -----------------------------------------------------------------------------------------------


def test_long_prompt_has_three_chunks_and_keeps_its_tail(sd15: Any) -> None:
    words = _words(200)
    long_prompt = " ".join(words)
    chunks = tokenize_prompt(sd15, long_prompt)
    assert [c.token_count for c in chunks] == [CHUNK, CHUNK, 200 - 2 * CHUNK]
    assert all(len(c.ids) == MAX_LENGTH for c in chunks)
    first = encode_prompt(sd15, long_prompt).embeds
    assert first.shape == (1, 3 * MAX_LENGTH, TEXT_HIDDEN)
    other_last = "dragon" if words[-1] != "dragon" else "castle"
    changed = encode_prompt(sd15, " ".join([*words[:-1], other_last])).embeds
    torch.testing.assert_close(first[:, : 2 * MAX_LENGTH], changed[:, : 2 * MAX_LENGTH])
    assert not torch.allclose(first[:, 2 * MAX_LENGTH :], changed[:, 2 * MAX_LENGTH :])


def test_break_starts_a_new_chunk(sd15: Any) -> None:
    embeds = encode_prompt(sd15, "a red cat BREAK a blue dog").embeds
    assert embeds.shape == (1, 2 * MAX_LENGTH, TEXT_HIDDEN)
    torch.testing.assert_close(embeds[:, :MAX_LENGTH], encode_prompt(sd15, "a red cat").embeds)
    torch.testing.assert_close(embeds[:, MAX_LENGTH:], encode_prompt(sd15, "a blue dog").embeds)
    # Inside brackets too (A1111 would encode the word "BREAK" with weight -1.1 instead).
    assert [c.token_count for c in tokenize_prompt(sd15, "(a red cat BREAK a blue dog)")] == [3, 3]


def test_full_chunk_breaks_after_a_recent_comma(sd15: Any) -> None:
    head, tail = _words(70), _words(10, offset=3)
    chunks = tokenize_prompt(sd15, " ".join(head) + ", " + " ".join(tail))
    # 70 words + the comma stay together; the 10 words after the comma move to the next chunk whole.
    assert [c.token_count for c in chunks] == [71, 10]
    far = _words(CHUNK - COMMA_BACKTRACK - 5)
    rest = _words(CHUNK, offset=1)
    chunks = tokenize_prompt(sd15, " ".join(far) + ", " + " ".join(rest))
    assert chunks[0].token_count == CHUNK  # the comma is too far back: split at the chunk size


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["cat", "dog", "sky", ",", "BREAK", "(red)", "(sky:1.3)", "[blue]"]), max_size=200))
def test_chunks_keep_every_token_in_order(sd15: Any, pieces: list[str]) -> None:
    text = " ".join(pieces)
    chunks = tokenize_prompt(sd15, text)
    tokenizer = sd15.tokenizer
    assert chunks
    for chunk in chunks:
        assert len(chunk.ids) == len(chunk.weights) == MAX_LENGTH
        assert chunk.token_count <= CHUNK
        assert chunk.ids[0] == tokenizer.bos_token_id and chunk.ids[chunk.token_count + 1] == tokenizer.eos_token_id
    kept = [i for c in chunks for i in c.ids[1 : c.token_count + 1]]
    plain = re.sub(r"BREAK|:1\.3|[()\[\]]", " ", text)
    assert kept == tokenizer(plain, add_special_tokens=False)["input_ids"]


def test_weights_follow_their_tokens_across_chunks(sd15: Any) -> None:
    chunks = tokenize_prompt(sd15, " ".join(_words(CHUNK)) + " (cat:1.4)")
    assert chunks[1].token_count == 1
    assert chunks[1].weights[1] == pytest.approx(1.4)
    assert set(chunks[0].weights) == {1.0}


def test_sdxl_long_prompt_shapes_and_pooled_from_first_chunk(sdxl: Any) -> None:
    words = _words(100)
    encoded = encode_prompt(sdxl, " ".join(words))
    assert encoded.embeds.shape == (1, 2 * MAX_LENGTH, 2 * TEXT_HIDDEN)
    first_chunk_only = encode_prompt(sdxl, " ".join(words[:CHUNK]))
    assert encoded.pooled is not None and first_chunk_only.pooled is not None
    torch.testing.assert_close(encoded.pooled, first_chunk_only.pooled)


# --- pipeline kwargs ----------------------------------------------------------------------------------------


def test_pair_pads_the_shorter_prompt_with_empty_chunks(sd15: Any) -> None:
    positive = encode_prompt(sd15, " ".join(_words(100)))
    negative = encode_prompt(sd15, "blurry")
    kwargs = pair_for_pipeline(sd15, positive, negative)
    assert set(kwargs) == {"prompt_embeds", "negative_prompt_embeds"}
    assert kwargs["prompt_embeds"].shape == kwargs["negative_prompt_embeds"].shape == (1, 2 * MAX_LENGTH, TEXT_HIDDEN)
    torch.testing.assert_close(kwargs["negative_prompt_embeds"][:, :MAX_LENGTH], negative.embeds)
    torch.testing.assert_close(kwargs["negative_prompt_embeds"][:, MAX_LENGTH:], encode_prompt(sd15, "").embeds)


def test_sd15_pipeline_call_matches_plain_prompt(sd15: Any) -> None:
    kwargs = pair_for_pipeline(sd15, encode_prompt(sd15, "a red cat"), encode_prompt(sd15, "blurry"))
    ours = _run(sd15, **kwargs)
    plain = _run(sd15, prompt="a red cat", negative_prompt="blurry")
    assert ours.shape == (1, TINY_SIZE, TINY_SIZE, 3)
    np.testing.assert_allclose(ours, plain, atol=1e-5)
    weighted = _run(sd15, **pair_for_pipeline(sd15, encode_prompt(sd15, "a red (cat:1.6)"),
                                               encode_prompt(sd15, "blurry")))
    assert np.abs(weighted - plain).max() > 1e-4


def test_sdxl_pipeline_call_produces_an_image(sdxl: Any) -> None:
    kwargs = pair_for_pipeline(sdxl, encode_prompt(sdxl, " ".join(_words(90))), encode_prompt(sdxl, "ugly"))
    assert set(kwargs) == {
        "prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"
    }
    assert kwargs["pooled_prompt_embeds"].shape == kwargs["negative_pooled_prompt_embeds"].shape == (1, TEXT_HIDDEN)
    images = _run(sdxl, **kwargs)
    assert images.shape == (1, TINY_SIZE, TINY_SIZE, 3)
    assert np.isfinite(images).all()


def test_batch_stacks_prompts_of_different_lengths(sd15: Any) -> None:
    short = (encode_prompt(sd15, "a cat"), encode_prompt(sd15, ""))
    long = (encode_prompt(sd15, " ".join(_words(100))), encode_prompt(sd15, "ugly"))
    kwargs = batch_for_pipeline(sd15, [short, long])
    assert kwargs["prompt_embeds"].shape == (2, 2 * MAX_LENGTH, TEXT_HIDDEN)
    assert kwargs["negative_prompt_embeds"].shape == (2, 2 * MAX_LENGTH, TEXT_HIDDEN)
    torch.testing.assert_close(kwargs["prompt_embeds"][1:], long[0].embeds)
    images = _run(sd15, **kwargs)
    assert images.shape == (2, TINY_SIZE, TINY_SIZE, 3)
    assert not np.allclose(images[0], images[1])


# --- other tokenizers and bad input ------------------------------------------------------------------------


def _word_level_pipe(max_length: int) -> Any:
    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, ",": 3, **{w: i + 4 for i, w in enumerate(TINY_WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", model_max_length=max_length
    )
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=20, num_attention_heads=2,
                            num_hidden_layers=2, max_position_embeddings=max_length, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1)
    return SimpleNamespace(tokenizer=tokenizer, text_encoder=CLIPTextModel(config).eval())


def test_word_level_tokenizer_with_its_own_max_length() -> None:
    pipe = _word_level_pipe(max_length=16)
    chunks = tokenize_prompt(pipe, " ".join(_words(30)))
    assert [c.token_count for c in chunks] == [14, 14, 2]
    assert all(len(c.ids) == 16 and c.ids[0] == 0 and c.ids[c.token_count + 1] == 1 for c in chunks)
    prompt = "a (cat:1.3), " + " ".join(_words(20))
    # The comma is within COMMA_BACKTRACK of the chunk end, so the first chunk ends right after it.
    assert [c.token_count for c in tokenize_prompt(pipe, prompt)] == [3, 14, 6]
    encoded = encode_prompt(pipe, prompt)
    assert encoded.embeds.shape == (1, 48, 16)
    assert encoded.pooled is None


def test_pipeline_without_text_encoder_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="no CLIP tokenizer"):
        encode_prompt(SimpleNamespace(tokenizer=None, text_encoder=None), "a cat")


def test_batch_needs_prompts_and_matching_widths(sd15: Any, sdxl: Any) -> None:
    with pytest.raises(InvalidRequestError, match="prompts"):
        batch_for_pipeline(sd15, [])
    narrow, wide = encode_prompt(sd15, "a cat"), encode_prompt(sdxl, "a cat")
    with pytest.raises(InvalidRequestError, match="different widths"):
        batch_for_pipeline(sd15, [(narrow, wide)])
    with pytest.raises(InvalidRequestError, match="pooled"):
        pair_for_pipeline(sdxl, EncodedPrompt(wide.embeds, None), wide)
