"""Session 10 rules, set before a run: old (eager packs apart; dense at most 16 runs), merge (a launch's
eager packs as one call), both (merge, and dense may take a big call's runs, one per 1,024 tokens)."""
from omnienc.encoders import attention
from omnienc.runtime import lane as lane_mod

RULES = {"old": (0, 0), "merge": (4, 0), "both": (4, 1024)}


def apply(rule, lanes=None):
    merge, tokens = RULES[rule]
    attention.DENSE_RUN_TOKENS = tokens
    lane_mod.Lane.EAGER_MERGE = merge
    for lane in lanes or ():
        lane.EAGER_MERGE = merge
