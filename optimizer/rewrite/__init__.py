"""Substitution rules: the rule language, matching, and rewriting IR graphs."""

from optimizer.rewrite.apply import apply_match
from optimizer.rewrite.match import Match, MatchIndex, find_matches
from optimizer.rewrite.rule import Rule, RuleSyntaxError, load_rules, parse_rules, rules_dir

__all__ = [
    "Match",
    "MatchIndex",
    "Rule",
    "RuleSyntaxError",
    "apply_match",
    "find_matches",
    "load_rules",
    "parse_rules",
    "rules_dir",
]
