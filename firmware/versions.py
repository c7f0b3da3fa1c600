# The version set in one place: the firmware's own version is set here and nowhere else; each
# format's version stays beside the code that writes it (record.VERSION, uplink_proto's,
# bundle.FORMAT*) and is read from there, never copied. The validator's status
# (app.show_status) and every host tool (`--versions`, `python -m tools.versions`) print current().
# A parameter bundle's version is set only in its TOML's [bundle] version (tools/params_compile).
FIRMWARE = "2026.12.5"


def current(params_version=None):
    """{name: version} of this firmware and the formats it reads and writes."""
    import bundle
    import record
    import uplink_proto

    out = {
        "firmware": FIRMWARE,
        "record": record.VERSION,
        "protocol": uplink_proto.VERSION_EPOCH,
        "protocol_accepted": (uplink_proto.VERSION, uplink_proto.VERSION_EPOCH),
        "bundle_formats": (bundle.FORMAT, bundle.FORMAT_SIGNED),
    }
    if params_version is not None:
        out["params"] = params_version
    return out
