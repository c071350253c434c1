"""What the supervisor talks to besides Redis: systemd (notify, watchdog), the embedded
Valkey server, the Prometheus metrics endpoint, and log output."""
