"""Training the class-conditional (or unconditional) VQGPT teacher on precomputed tokens."""

import json
import math
import os
from dataclasses import dataclass, field

import torch

from ..cli import check_options_read
from ..data import DataArguments, collate_tokens, drop_class, token_splits
from ..hub import check_output_not_input, json_safe, load_pretrained
from ..models import VQGPTConfig, VQGPTForCausalLM, VQTokenizer
from ..distill.distill import predictive_entropy, sample_sequences
from ..pipeline import check_tokenizer_matches, class_prompts, weights_fingerprint
from .trainer import TrainingArguments, check_output_free, make_accelerator, train


@dataclass
class TeacherArguments:
    tokenizer_path: str = field(default="checkpoints/digits/vq-tokenizer", metadata={"help": "Trained VQTokenizer folder."})
    preset: str = field(default="teacher", metadata={"help": "Size preset (VQGPT_PRESETS): teacher, student-4L, ..."})
    hidden_size: int = field(default=128, metadata={"help": "Transformer width."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads."})
    num_entropy_samples: int = field(default=256, metadata={"help": "Own samples (T=1) for the entropy per token reported at the end (0 = skip)."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout."})
    class_dropout_prob: float = field(default=0.1, metadata={"help": "Chance to train on the null class (for CFG)."})
    unconditional: bool = field(default=False, metadata={"help": "Ignore labels: an unconditional model (num_classes=0)."})

    def __post_init__(self):
        check_options_read(self, "unconditional", {"class_dropout_prob": (False,)})  # no class to drop
        # The model's own checks, on a stand-in codebook and grid, before any data is tokenized.
        VQGPTConfig.from_preset(self.preset, codebook_size=2, grid_h=1, grid_w=1, hidden_size=self.hidden_size,
                                num_attention_heads=self.num_attention_heads, dropout=self.dropout,
                                class_dropout_prob=self.class_dropout_prob)
        if not isinstance(self.num_entropy_samples, int) or self.num_entropy_samples < 0:
            raise ValueError(f"`num_entropy_samples` must be an integer >= 0 (0 = skip), got {self.num_entropy_samples!r}.")


@torch.no_grad()
def evaluate_loss(model, sequences: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Mean next-code cross-entropy and perplexity of `model` on `sequences` `(N, 1 + h*w)`."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(sequences), batch_size):
        ids = sequences[i : i + batch_size].to(device)
        total += model(ids, labels=ids, use_cache=False).loss.item() * len(ids)
        count += len(ids)
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(loss)}


def train_teacher(data_args: DataArguments, model_args: TeacherArguments, args: TrainingArguments) -> VQGPTForCausalLM:
    check_output_not_input(args.output_dir, tokenizer_path=model_args.tokenizer_path, data_dir=data_args.data_dir)
    check_output_free(args)  # a saved model there is replaced only when asked
    accelerator = make_accelerator(args)
    tokenizer = load_pretrained(VQTokenizer, model_args.tokenizer_path, "tokenizer_path")
    with accelerator.main_process_first():  # one process writes the token cache, the others read it
        splits = token_splits(data_args, tokenizer)
    h, w = tokenizer.grid_size(data_args.resolution)
    labels = splits["train"].features["label"]
    names = {} if model_args.unconditional else {"id2label": dict(enumerate(labels.names))}  # rows of sample grids
    config = VQGPTConfig.from_preset(
        model_args.preset,
        codebook_size=tokenizer.codebook_size,
        num_classes=0 if model_args.unconditional else labels.num_classes,
        grid_h=h,
        grid_w=w,
        hidden_size=model_args.hidden_size,
        num_attention_heads=model_args.num_attention_heads,
        dropout=model_args.dropout,
        class_dropout_prob=model_args.class_dropout_prob,
        tokenizer_fingerprint=weights_fingerprint(tokenizer),  # decoding with another one is refused
        **names,
    )
    check_tokenizer_matches(tokenizer, config)
    model = VQGPTForCausalLM(config)
    collate = collate_tokens(config)
    val_sequences = collate(list(splits["validation"]))
    final_metrics = {}

    def loss_fn(model, ids, step):
        ids = drop_class(ids, config, config.class_dropout_prob)
        return model(ids, labels=ids, use_cache=False).loss, {}

    def eval_fn(model, step):
        final_metrics.update(evaluate_loss(model, val_sequences))
        return dict(final_metrics)

    def save_fn(model, output_dir):
        model.save_pretrained(output_dir)
        metrics = {"val_loss": final_metrics.get("loss"), "val_perplexity": final_metrics.get("perplexity"),
                   "parameters": model.num_parameters(), "steps": args.max_steps}
        if model_args.num_entropy_samples:
            model.eval()
            samples = sample_sequences(model, class_prompts(model, model_args.num_entropy_samples), seed=1234)
            metrics["entropy_per_token"] = predictive_entropy(model, samples)
        with open(os.path.join(output_dir, "training_metrics.json"), "w") as f:
            json.dump(json_safe(metrics), f, indent=2, allow_nan=False)

    # The folder's path may change between a run and its resumption, the tokenizer in it may not: its weights are
    # recorded (a resumed run would learn another tokenizer's codes on top of the first one's).
    inputs = {"weights of tokenizer_path": weights_fingerprint(tokenizer)}
    run_config = {"data": vars(data_args), "model": vars(model_args), "inputs": inputs}
    return train(model, splits["train"], loss_fn, args, accelerator, collate, eval_fn, save_fn, run_config)
