from .checkpoint import list_checkpoints, load_checkpoint, resolve_checkpoint, save_checkpoint
from .trainer import TrainingArguments, make_accelerator, steps_for_epochs, train
