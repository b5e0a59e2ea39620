"""Running an audit: the pure planner (runs by role × replicate), the cached stages with one
cache-key rule, the cache, worker processes, progress, and the session that runs the cases."""
