"""Markdown leaderboard of robust vs nominal prune potential, rebuilt from result files."""

from leaderboard.build import build_leaderboard, render_leaderboard

__all__ = ["build_leaderboard", "render_leaderboard"]
