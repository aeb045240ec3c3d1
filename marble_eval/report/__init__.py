"""Report stage: leaderboards, significance, published numbers, plots and the HTML page."""
