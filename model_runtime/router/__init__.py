"""The traffic router: splits requests between stable and canary by weight, mirrors a share of them to
measure how differently the canary answers, and reports both by track and revision."""
