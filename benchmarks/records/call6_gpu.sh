#!/usr/bin/env bash
# A record: the GPU call after call5's two test fixes and the faster audio plan. The same parts as
# call5_gpu.sh (cost model on the card, every GPU test, long-media probe, M*'s nodes), with the probe
# running the 1-minute video's piece-size A/B in turns (cut with the largest bucket's pieces, uncut,
# cut with pieces as large as the bound allows) and the two memory cases.
set -uo pipefail
PROBE_CASES=${PROBE_CASES:-video1m_turns,video10m,audio60m} PROBE_S=${PROBE_S:-100} \
  bash "$(dirname "$0")/call5_gpu.sh"
