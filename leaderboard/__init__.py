"""The leaderboard of robust vs nominal prune potential, rebuilt from result files: one row model
(leaderboard.rows) rendered as markdown (leaderboard.build), JSON and a static HTML page
(leaderboard.html), written or checked by leaderboard.publish."""

from leaderboard.build import build_leaderboard, render_leaderboard
from leaderboard.rows import Board, build_board, load_board

__all__ = ["Board", "build_board", "build_leaderboard", "load_board", "render_leaderboard"]
