"""Block verification's pooled statistics on the shipped digits pair, before and after a889866 (each row's block ends
at the end of its sequence). Run from the repository root with the tree to measure on PYTHONPATH:
    python benchmarks/block-end/block_stats.py > benchmarks/block-end/after.json
8 calls of 64 images (classes 0-9 in turn), seeds 0-7, eager engine, temperature 1, gamma 6 and 12."""
import torch, json, sys
from hf_specdec.models import VQGPTForCausalLM
from hf_specdec.speculative import speculative_sample, pooled_statistics
torch.set_num_threads(1)
T = VQGPTForCausalLM.from_pretrained("checkpoints/digits/teacher").eval()
D = VQGPTForCausalLM.from_pretrained("checkpoints/digits/draft-1L").eval()
res = {}
for gamma in (6, 12):
    outs = []
    for seed in range(8):
        prompt = T.class_prompt(torch.arange(64) % 10)
        outs.append(speculative_sample(T, D, prompt, gamma=gamma, verification="block", generator=torch.Generator().manual_seed(seed)))
    st = pooled_statistics(outs)
    res[gamma] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in st.items()} if isinstance(st, dict) else str(st)
print(json.dumps(res))
