"""Init-time compatibility checks between teacher, student, tokenizers and the layer map (clear errors)."""

from __future__ import annotations

from typing import Any

import torch


def hidden_sizes(model: Any) -> list[int]:
    """Widths of every ``hidden_states`` entry (0 = embeddings), from a 3-token dry run."""
    vocab = model.get_input_embeddings().weight.shape[0]
    device = next(model.parameters()).device
    ids = torch.arange(1, 4, device=device).clamp(max=vocab - 1).unsqueeze(0)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    model.train(was_training)
    if getattr(out, "hidden_states", None) is None:
        raise ValueError(f"{type(model).__name__} does not return hidden_states with output_hidden_states=True")
    return [int(h.shape[-1]) for h in out.hidden_states]


def output_size(model: Any) -> int:
    """Size of the logit vector: number of labels (classifier) or vocabulary (causal LM)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        return int(head.weight.shape[0])
    return int(getattr(model.config, "num_labels", 0))


def check_logits(teacher: Any, student: Any) -> None:
    """Logit KD compares distributions entry by entry: the output spaces must be identical."""
    t, s = output_size(teacher), output_size(student)
    if t != s:
        raise ValueError(
            f"logit KD needs the same output space: the teacher has {t} outputs (labels or vocabulary entries), "
            f"the student {s}; use a student with the teacher's vocabulary/labels, or set loss.w_kd: 0"
        )


def tokenizer_mismatch(teacher_tok: Any, student_tok: Any | None) -> str | None:
    """How the student's tokenizer differs from the teacher's (vocabulary, or pad / bos / eos ids), or None when it
    agrees (or the student has none of its own)."""
    if student_tok is None:
        return None
    tv, sv = teacher_tok.get_vocab(), student_tok.get_vocab()
    if tv != sv:
        diff = sorted(set(tv.items()) ^ set(sv.items()), key=str)[:3]
        return (f"tokenizer mismatch: the teacher's vocabulary has {len(tv)} entries, the student's {len(sv)}, "
                f"and they differ (e.g. {diff})")
    for attr in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(teacher_tok, attr, None) != getattr(student_tok, attr, None):
            return (f"tokenizer mismatch: {attr} is {getattr(teacher_tok, attr)} for the teacher and "
                    f"{getattr(student_tok, attr)} for the student")
    return None


def check_tokenizers(teacher_tok: Any, student_tok: Any | None,
                     reason: str = "distillation feeds both the same input ids") -> None:
    """Teacher and student read the same input ids: their tokenizers must agree (``reason`` says why, in the
    error). A classification run gives a student with its own tokenizer its own input ids instead (see
    :mod:`repgeo.distill.tasks`), so it checks the tokenizers only where they must agree."""
    problem = tokenizer_mismatch(teacher_tok, student_tok)
    if problem is not None:
        raise ValueError(f"{problem}; {reason}, so the student must use the teacher's tokenizer")


def check_vocab_covers(tokenizer: Any, model: Any, which: str) -> None:
    """Every token id of the tokenizer must have an input embedding."""
    n_emb = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > n_emb:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the {which}'s input embedding has only {n_emb} rows"
        )


def check_layer_map(layer_map: dict[int, int], n_student: int, n_teacher: int) -> None:
    """Layer indices in range (hidden_states numbering, 0 = embeddings)."""
    for s, t in layer_map.items():
        if not 0 <= s <= n_student:
            raise ValueError(f"layer map: student layer {s} is out of range 0..{n_student}")
        if not 0 <= t <= n_teacher:
            raise ValueError(f"layer map: teacher layer {t} (for student layer {s}) is out of range 0..{n_teacher}")


def check_projectors(feature_loss: Any, student_dims: list[int], teacher_dims: list[int]) -> None:
    """A learned projector must map the student's width to the teacher's for its pair."""
    for s, t in feature_loss.layer_map.items():
        from .feature_loss import pair_name

        name = pair_name(s, t)
        if name in feature_loss.projectors:
            w = feature_loss.projectors[name].weight
            if tuple(w.shape) != (teacher_dims[t], student_dims[s]):
                raise ValueError(
                    f"projector {name} maps {w.shape[1]} -> {w.shape[0]} features, but student layer {s} has "
                    f"{student_dims[s]} and teacher layer {t} has {teacher_dims[t]} (hidden sizes)"
                )
