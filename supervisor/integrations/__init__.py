"""What the supervisor talks to besides Redis: systemd (notify, watchdog), the embedded
Valkey server, the HTTP endpoint (Prometheus metrics, health probes), and log output."""
