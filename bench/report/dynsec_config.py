#!/usr/bin/env python3
"""Writes the dynamic-security plugin's configuration for the broker parts' fixture (not a report).

    dynsec_config.py IDS_FILE OUT.json

One role per device id with publishClientSend, publishClientReceive, subscribePattern and
unsubscribePattern on devices/ID/#, one client per device (username = the id, no password) holding
it, default access all denied. With use_identity_as_username the broker never asks dynsec to
authenticate; dynsec finds the client by the username (the certificate CN) on every ACL check.
"""
import json
import sys

ACL_TYPES = ("publishClientSend", "publishClientReceive", "subscribePattern", "unsubscribePattern")


def config(ids):
    def acls(device):
        topic = f"devices/{device}/#"
        return [{"acltype": a, "topic": topic, "priority": 0, "allow": True} for a in ACL_TYPES]

    return {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                             "subscribe": False, "unsubscribe": False},
        "roles": [{"rolename": f"role-{d}", "acls": acls(d)} for d in ids],
        "clients": [{"username": d, "roles": [{"rolename": f"role-{d}"}]} for d in ids],
        "groups": [],
    }


def main(argv):
    ids_file, out = argv
    with open(ids_file) as f:
        ids = f.read().split()
    with open(out, "w") as f:
        json.dump(config(ids), f)


if __name__ == "__main__":
    main(sys.argv[1:])
