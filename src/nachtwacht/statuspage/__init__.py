"""The public status page (issue 18): components, public notices, maintenance, uptime bars,
and the subscribers who hear of each published notice."""
