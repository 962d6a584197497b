"""Notifiers: where a notification goes (Slack, PagerDuty, a webhook). One file each; see base.py."""
