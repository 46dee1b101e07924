"""The Frappe adapters of the errors domain: `errorlog` polls a site's Error Log, `monitor`
tails a bench's monitor.json.log into request metrics, `engine` installs both as engine
modules (see docs/frappe.md)."""
