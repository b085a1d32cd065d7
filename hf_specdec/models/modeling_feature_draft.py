"""A draft that reads the teacher: EAGLE-3-style feature conditioning for the VQGPT teacher.

An independent draft sees only tokens. This one also sees the teacher's hidden states (Li et al., EAGLE 2024;
EAGLE-3 2025): at slot `s` its input is the teacher's *fused feature* of slot `s - 1` (a linear map of the
concatenated hidden states of a low, a middle and the top layer, `feature_layers`) next to the embedding of token
`x_s`, and its output at slot `s` predicts `x_{s+1}`. Inside a speculative round the teacher's features exist only
up to the last verified token, so the draft continues on its own outputs (its hidden state stands in for the
teacher's feature), which is what training unrolls ("training-time test").

The teacher's token embedding, position embedding and head are reused, not copied: the checkpoint holds only the
draft's own weights (`fuse`, `fc`, its blocks and final norm), and the draft runs only with its teacher attached:

    draft = VQGPTFeatureDraft.from_pretrained("checkpoints/digits/feature-1L", teacher=teacher)

HF assisted generation cannot use this draft: it passes the assistant only token ids, never the target's hidden
states. The project's engine (`SpeculativeDecoder`) hands the verify pass's features to the draft at no extra
teacher forward.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from .configuration_vqgpt import VQGPTConfig, _is_int
from .modeling_vqgpt import (VQGPTBlock, VQGPTForCausalLM, VQGPTPreTrainedModel, _cached_rows, code_loss,
                             guided_logits)


class VQGPTFeatureDraftConfig(VQGPTConfig):
    r"""
    A `VQGPTConfig` (the teacher's vocabulary and grid; `num_hidden_layers` is the draft's depth, `hidden_size` its
    width, by default the teacher's) plus:

    Args:
        teacher_num_hidden_layers (`int`): depth of the teacher whose features the draft reads.
        teacher_hidden_size (`int`, *optional*): width of that teacher, default `hidden_size` (a draft as wide as its
            teacher). A wider draft maps the teacher's position embedding up (`widen`) and its own output down to the
            teacher's head (`narrow`).
        feature_layers (`list[int]`, *optional*): indices into the teacher's `hidden_states` (0 = embeddings, `i` =
            output of block `i`, the last after `ln_f`) that are fused; default: a low, the middle and the top one.
    """

    model_type = "vqgpt_feature_draft"
    _auto_class = None  # not a remote-code model: it loads through the library, with its teacher

    teacher_num_hidden_layers: int = 12
    feature_layers: list[int] | None = None
    teacher_hidden_size: int | None = None

    def __post_init__(self, **kwargs):
        n = self.teacher_num_hidden_layers
        if not _is_int(n) or n < 1:
            raise ValueError(f"`teacher_num_hidden_layers` must be a positive integer, got {n!r}.")
        if self.feature_layers is None:
            self.feature_layers = sorted({min(2, n), n // 2 + 1, n})
        layers = self.feature_layers
        if not isinstance(layers, (list, tuple)) or not layers or not all(_is_int(i) and 0 <= i <= n for i in layers):
            raise ValueError(f"`feature_layers` must be a non-empty list of indices in [0, {n}] (teacher layers whose "
                             f"outputs the draft reads), got {layers!r}.")
        self.feature_layers = list(layers)
        if self.teacher_hidden_size is None:
            self.teacher_hidden_size = self.hidden_size
        if not _is_int(self.teacher_hidden_size) or self.teacher_hidden_size < 1:
            raise ValueError(f"`teacher_hidden_size` must be a positive integer, got {self.teacher_hidden_size!r}.")
        super().__post_init__(**kwargs)

    @classmethod
    def for_teacher(cls, teacher_config: VQGPTConfig, num_layers: int = 1, feature_layers=None,
                    intermediate_size: int | None = None, hidden_size: int | None = None):
        """A draft config of `num_layers` blocks for a teacher with `teacher_config`: width `hidden_size` (default the
        teacher's; a multiple of it, with as many more heads of the teacher's head size, so that the draft can start
        as the teacher's blocks tiled), MLP width `intermediate_size` (default the teacher's, times the width
        multiple)."""
        C = teacher_config.hidden_size
        W = C if hidden_size is None else hidden_size
        if not isinstance(W, int) or isinstance(W, bool) or W < C or W % C:
            raise ValueError(f"`hidden_size` must be a multiple of the teacher's hidden_size ({C}), got {W!r}.")
        fields = {**teacher_config.own_fields(), "num_hidden_layers": num_layers,
                  "teacher_num_hidden_layers": teacher_config.num_hidden_layers, "feature_layers": feature_layers,
                  "hidden_size": W, "teacher_hidden_size": C,
                  "num_attention_heads": teacher_config.num_attention_heads * (W // C),
                  "intermediate_size": teacher_config.intermediate_size * (W // C)}
        if intermediate_size is not None:
            fields["intermediate_size"] = intermediate_size
        return cls(**fields)


@dataclass
class FeatureDraftOutput(ModelOutput):
    """`logits` `(B, T', K)`; `hidden_states` `(B', T, hidden_size)`, the last block's output (the draft's stand-in
    for the teacher's feature at each slot); unrolled: `unrolled_logits` of every pass and, with `labels`, the `loss`
    of the first (the next-code cross-entropy, with the teacher's features)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    unrolled_logits: list[torch.Tensor] | None = None


class VQGPTFeatureDraft(VQGPTPreTrainedModel):
    """`fuse` (teacher features -> width), `fc` ([feature; token embedding] -> width), `num_hidden_layers` blocks,
    `ln_f`; the teacher's `wte`, `wpe` and `lm_head` are read through `attach_teacher` (a draft wider than its
    teacher also has `widen`, position embedding -> its width, and `narrow`, its width -> the teacher's head)."""

    config_class = VQGPTFeatureDraftConfig
    config: VQGPTFeatureDraftConfig
    base_model_prefix = "draft"
    reads_features = True  # the engine's test for "hand me the verify pass's features"

    def __init__(self, config: VQGPTFeatureDraftConfig):
        super().__init__(config)
        W, C = config.hidden_size, config.teacher_hidden_size
        self.fuse = nn.Linear(len(config.feature_layers) * C, W)
        self.fc = nn.Linear(W + C, W)
        self.h = nn.ModuleList([VQGPTBlock(config, i) for i in range(config.num_hidden_layers)])
        self.ln_f = nn.LayerNorm(W, eps=config.layer_norm_eps)
        self.widen = nn.Linear(C, W, bias=False) if W != C else None
        self.narrow = nn.Linear(W, C, bias=False) if W != C else None
        self._teacher: tuple = ()  # a tuple, so the teacher is neither a submodule nor saved with the draft
        self.post_init()

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, teacher: VQGPTForCausalLM | None = None, **kwargs):
        """Load the draft's weights and attach `teacher` (required: the draft reuses its embeddings and head). The
        draft takes the teacher's dtype and device unless `dtype` / `device_map` say otherwise: it runs with this
        teacher only (a float32 draft of a bfloat16 teacher was refused by every sampler)."""
        if teacher is None:
            raise ValueError(
                f"`teacher` is required: {str(pretrained_model_name_or_path)!r} is a feature-conditioned draft that "
                "reads the teacher's hidden states and reuses its embeddings and head; load it with "
                "`VQGPTFeatureDraft.from_pretrained(path, teacher=teacher)`."
            )
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model, info = model if kwargs.get("output_loading_info") else (model, None)
        model.attach_teacher(teacher)
        follow = {}
        if kwargs.get("dtype", kwargs.get("torch_dtype")) is None:
            follow["dtype"] = teacher.dtype
        if kwargs.get("device_map") is None:
            follow["device"] = teacher.device
        model = model.to(**follow) if follow else model
        return model if info is None else (model, info)

    def attach_teacher(self, teacher: VQGPTForCausalLM) -> "VQGPTFeatureDraft":
        """Read `teacher`'s embeddings and head from now on; `ValueError` if it is not a loaded VQGPT of the shape
        this draft was trained for."""
        from ..speculative.checks import check_model  # (the speculative package imports the models)

        check_model(teacher, "teacher")  # duck-typed: a teacher loaded through remote code is another class
        config, theirs = self.config, teacher.config
        for name, ours in (("codebook_size",) * 2, ("num_classes",) * 2, ("grid_h",) * 2, ("grid_w",) * 2,
                           ("hidden_size", "teacher_hidden_size")):
            if getattr(config, ours) != getattr(theirs, name):
                raise ValueError(f"`teacher` has {name}={getattr(theirs, name)}, this draft was made for "
                                 f"{getattr(config, ours)}.")
        if theirs.num_hidden_layers != config.teacher_num_hidden_layers:
            raise ValueError(f"`teacher` has {theirs.num_hidden_layers} layers, this draft reads the features of a "
                             f"{config.teacher_num_hidden_layers}-layer teacher.")
        self._teacher = (teacher,)
        return self

    @property
    def teacher(self) -> VQGPTForCausalLM:
        if not self._teacher:
            raise ValueError("This feature draft has no teacher: call `draft.attach_teacher(teacher)` or load it "
                             "with `VQGPTFeatureDraft.from_pretrained(path, teacher=teacher)`.")
        return self._teacher[0]

    def generate(self, *args, **kwargs):
        """A feature draft cannot sample alone: it reads the teacher's hidden states at every step."""
        raise ValueError("A feature-conditioned draft cannot generate alone (it reads the teacher's hidden states): use "
                         "`speculative_sample(teacher, draft, prompt)`, or `teacher.generate(prompt, "
                         "custom_generate=speculative_generate, draft_model=draft)`.")

    def fuse_features(self, hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The teacher's `hidden_states` (from `output_hidden_states=True`) -> fused features `(B, T, C)`."""
        return self.fuse(torch.cat([hidden_states[i] for i in self.config.feature_layers], dim=-1))

    def forward(
        self,
        input_ids: torch.LongTensor,
        features: torch.Tensor | None = None,
        cache=None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        cfg_scale: float | None = None,
        teacher_hidden_states: tuple[torch.Tensor, ...] | None = None,
        steps: int = 1,
        return_logits: bool = True,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> FeatureDraftOutput:
        r"""
        input_ids (`(B, T)`): the tokens `x_s` of slots `s`.
        features (`(B', T, hidden_size)`): for each slot, the fused teacher feature of the slot before (zeros before
            the first slot) or the draft's own `hidden_states` standing in for it; `B' = 2B` with guidance (the teacher's
            unconditional rows after the conditional ones, as its guided forward returns them). Without `features`,
            `input_ids` are whole sequences from slot 0 and the draft runs `steps` unrolled passes without a cache:
            the first on the teacher's features (`teacher_hidden_states`, or a teacher pass), each later one on the
            previous pass's hidden states (training-time test, EAGLE-3).
        cache, attention_mask, position_ids: as for `VQGPTForCausalLM` (positions are cache slots).
        cfg_scale (`float`): classifier-free guidance, combined as the teacher combines it.
        return_logits (`bool`): False skips the head (the engine needs logits at one slot per row: `head`).
        labels (`(B, T)`): unrolled only, targets as for `VQGPTForCausalLM` (the loss of the first pass).

        Returns `FeatureDraftOutput`.
        """
        if features is not None:
            return self._step(input_ids, features, cache, attention_mask, position_ids, use_cache, logits_to_keep,
                              cfg_scale, return_logits)
        if cache is not None or position_ids is not None:
            raise ValueError("Without `features`, `input_ids` must be whole sequences (no `cache`, no `position_ids`).")
        if not _is_int(steps) or steps < 1:
            raise ValueError(f"`steps` must be an integer >= 1 (unrolled draft passes), got {steps!r}.")
        if teacher_hidden_states is None:
            with torch.no_grad():
                teacher_hidden_states = self.teacher(input_ids, cfg_scale=cfg_scale, use_cache=False,
                                                     output_hidden_states=True).hidden_states
        features = _shift_right(self.fuse_features(teacher_hidden_states))
        unrolled = []
        for _ in range(steps):
            out = self._step(input_ids, features, None, None, None, False, logits_to_keep, cfg_scale)
            unrolled.append(out.logits)
            features = _shift_right(out.hidden_states)
        out.unrolled_logits = unrolled
        if labels is not None:
            out.loss = code_loss(self.teacher.loss_function, unrolled[0], labels, self.config.codebook_size,
                                 kwargs.get("num_items_in_batch"))
        return out

    def _step(self, input_ids, features, cache, attention_mask, position_ids, use_cache, logits_to_keep, cfg_scale,
              return_logits=True):
        teacher = self.teacher
        guided = cfg_scale is not None and cfg_scale != 1.0
        if guided:
            input_ids, attention_mask, position_ids = teacher._double_for_guidance(
                input_ids, cache, attention_mask, position_ids)
        if features.shape[:2] != input_ids.shape:
            raise ValueError(f"`features` must have shape {tuple(input_ids.shape)} + (hidden,) (with guidance the "
                             f"teacher's 2B rows), got {tuple(features.shape)}.")
        filled = cache is not None and _cached_rows(cache) >= 0
        if filled and (position_ids is None or (attention_mask is None and input_ids.shape[1] > 1)):
            raise ValueError("A pass on a filled cache needs explicit `position_ids` (and an `attention_mask` for "
                             "more than one token): the engine's slots.")
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        trunk = teacher.transformer
        positions = trunk.wpe(position_ids)
        hidden = self.fc(torch.cat([features, trunk.wte(input_ids)], dim=-1)) + (
            positions if self.widen is None else self.widen(positions))
        for block in self.h:
            hidden = block(hidden, attention_mask, position_ids, cache if use_cache is not False else None)
        if not return_logits:
            return FeatureDraftOutput(hidden_states=hidden)
        return FeatureDraftOutput(logits=self.head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden, cfg_scale),
                                  hidden_states=hidden)

    def head(self, hidden_states: torch.Tensor, cfg_scale: float | None = None) -> torch.Tensor:
        """Next-code logits `(B, T, K)` from the draft's `hidden_states` `(B', T, hidden_size)` (guided: `2B` rows
        combined)."""
        hidden_states = self.ln_f(hidden_states)
        logits = self.teacher.lm_head(hidden_states if self.narrow is None else self.narrow(hidden_states))
        return guided_logits(logits, cfg_scale) if cfg_scale is not None and cfg_scale != 1.0 else logits

    def unrolled_logits(self, input_ids: torch.LongTensor, steps: int = 1, cfg_scale: float | None = None,
                        teacher_hidden_states: tuple[torch.Tensor, ...] | None = None) -> list[torch.Tensor]:
        """Next-code logits `(B, T, K)` at every slot of full sequences `input_ids`, as the draft's `steps` first
        draft steps of a round see them: step 1 reads the teacher's features (as after a verify pass), step `k` its
        own hidden states of step `k - 1` (training-time test, EAGLE-3). `teacher_hidden_states` (the teacher's
        `output_hidden_states` on `input_ids`, every row) saves the teacher pass when the caller has it."""
        return self(input_ids, cfg_scale=cfg_scale, teacher_hidden_states=teacher_hidden_states,
                    steps=steps).unrolled_logits


def _shift_right(features: torch.Tensor) -> torch.Tensor:
    """Slot `s` gets slot `s - 1`'s feature; slot 0 the zero feature."""
    return torch.cat([torch.zeros_like(features[:, :1]), features[:, :-1]], dim=1)


def make_feature_draft(teacher: VQGPTForCausalLM, num_layers: int = 1, feature_layers=None, init: bool = True,
                       teacher_layers: list[int] | None = None, intermediate_size: int | None = None,
                       hidden_size: int | None = None):
    """A feature draft for `teacher`. With `init`, its blocks start as the teacher's blocks `teacher_layers`
    (default: the first ones; a wider MLP or a wider draft as in `VQGPTBlock.copy_from`), its final norm as the
    teacher's, and `fc` passes the token embedding through unchanged: it starts as the teacher-initialised
    independent draft and learns to read the features from there. A draft `k` times as wide as its teacher
    (`hidden_size`) carries `k` copies of the teacher's residual stream (`widen` tiles, `narrow` averages them), so it
    too starts as that draft; a little noise tells the copies apart (Net2WiderNet, Chen et al. 2016)."""
    config = VQGPTFeatureDraftConfig.for_teacher(teacher.config, num_layers, feature_layers, intermediate_size,
                                                 hidden_size)
    draft = VQGPTFeatureDraft(config).attach_teacher(teacher)
    if init:
        W, C = config.hidden_size, config.teacher_hidden_size
        tiled = torch.eye(C).repeat(W // C, 1)  # (W, C): k copies
        with torch.no_grad():
            draft.fc.weight.zero_()
            draft.fc.weight[:, W:].copy_(tiled)
            draft.fc.bias.zero_()
            if draft.widen is not None:
                draft.widen.weight.copy_(tiled)
                draft.narrow.weight.copy_(tiled.T / (W // C))
        teacher_layers = list(range(num_layers)) if teacher_layers is None else list(teacher_layers)
        if len(teacher_layers) != num_layers or not all(0 <= i < teacher.config.num_hidden_layers for i in teacher_layers):
            raise ValueError(f"`teacher_layers` must list {num_layers} indices in [0, {teacher.config.num_hidden_layers}), "
                             f"got {teacher_layers}.")
        for block, i in zip(draft.h, teacher_layers):
            block.copy_from(teacher.transformer.h[i])
        draft.ln_f.load_state_dict({k: v.repeat(W // C) for k, v in teacher.transformer.ln_f.state_dict().items()})
        if W != C:
            with torch.no_grad():
                for p in draft.h.parameters():
                    p.add_(torch.randn_like(p), alpha=1e-3)
    teacher_weight = next(teacher.parameters())  # the teacher's device and dtype, as `from_pretrained` gives it
    return draft.to(teacher_weight.device, teacher_weight.dtype)


__all__ = ["FeatureDraftOutput", "VQGPTFeatureDraft", "VQGPTFeatureDraftConfig", "make_feature_draft"]
