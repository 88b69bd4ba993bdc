"""One adapter per platform: its client, its dialects and its wire mapping."""
