"""Result records, their aggregation and the leaderboard table."""
