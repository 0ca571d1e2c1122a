"""switchboard: the operators' command-line tool over the admin API."""
