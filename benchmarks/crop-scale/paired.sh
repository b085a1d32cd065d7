#!/usr/bin/env bash
# Paired batch-1 benchmark of the two crop scales' pairs, one after the other, nothing else on the machine.
cd "$(dirname "$0")/../.."
python scripts/paired_benchmark.py cpu 20 draft-1L=runs/crop-scale/small/draft-1L feature-2L=runs/crop-scale/small/feature-2L \
    --teacher runs/crop-scale/small/teacher --gammas 4 6 --block_gamma 6 --mode compile > benchmarks/crop-scale/paired-details.json
python scripts/paired_benchmark.py cpu 20 draft-1L=runs/crop-scale/whole/draft-1L \
    --teacher runs/crop-scale/whole/teacher --gammas 4 6 --block_gamma 6 --mode compile > benchmarks/crop-scale/paired-scenes.json
