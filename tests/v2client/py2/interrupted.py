"""An interrupted 2.x client run (Python 2.7): submits COUNT log-in tasks through the official
client's Api and exits before hearing any result, as a client killed mid-run does.

    python interrupted.py ACCOUNT PASSWORD COUNT
"""
from __future__ import print_function

import json
import sys

from ricloud.api import Api


def main():
    account, password, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    api = Api()
    api.setup()
    api.register_account(username=account, service="iCloud")
    tasks = [api.perform_task("iCloud", "log-in", account, {"password": password}) for _ in range(count)]
    print(json.dumps([task.uuid for task in tasks]))


if __name__ == "__main__":
    main()
