"""Session 9: `omnienc bench` under one dense-admission rule (argv[1]: auto, after4, after8, varlen);
the rest of argv goes to the bench."""
import sys
from omnienc.runtime import lane as lane_mod
rule, rest = sys.argv[1], sys.argv[2:]
if rule.startswith("after"):
    lane_mod.Lane.DENSE_AFTER = int(rule[5:])
elif rule.startswith("runs"):
    import functools
    from omnienc.encoders import attention as attn
    lane_mod.dense_layout = functools.partial(attn.dense_layout, max_runs=int(rule[4:]))
    lane_mod.Lane.DENSE_CREDIT = 10**9  # the old rule otherwise: no credit
elif rule == "varlen":
    lane_mod.Lane.DENSE_SHAPES = 0  # nothing admitted
from omnienc.tools.cli import main
sys.exit(main(["bench", *rest]))
