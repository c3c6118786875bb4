"""incident-bot: run incidents from Slack and get the postmortem written for you."""

__version__ = "0.1.0"
