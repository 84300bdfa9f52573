"""Substitution rules: the rule language, matching, and rewriting IR graphs."""

from optimizer.rewrite.rule import Rule, RuleSyntaxError, load_rules, parse_rules, rules_dir

__all__ = ["Rule", "RuleSyntaxError", "load_rules", "parse_rules", "rules_dir"]
