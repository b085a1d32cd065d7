from .distill import DistillArguments, expected_acceptance, make_student, run_distillation, sample_sequences
from .losses import divergence, forward_kl, generalized_jsd, hybrid_distillation_loss, reverse_kl, total_variation
