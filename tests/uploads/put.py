"""PUTs a file N times with Python `requests`; prints a JSON list of the
statuses (or exception names). Usage: put.py URL TOKEN FILE N"""
import json
import sys

import requests

url, token, path, times = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(path, "rb") as file:
    data = file.read()
headers = {"Authorization": "Bearer " + token, "Content-Type": "text/plain"}
outcomes = []
for _ in range(times):
    try:
        outcomes.append(requests.put(url, data=data, headers=headers, timeout=30).status_code)
    except requests.RequestException as error:
        outcomes.append(type(error).__name__ + ": " + str(error))
print(json.dumps(outcomes))
