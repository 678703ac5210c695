"""Schemathesis hooks for kvs (loaded by .ci/schemathesis.sh).

Blocking reads are left out: `wait` would hold each request for up to five
minutes, so it (and `after`, which only means something with it) is never
sent. Project routes mostly name the project the script created, so that
key routes reach storage rather than stopping at 404; deleting a project
still gets generated ids, so the run does not delete that project.
"""

import schemathesis

PROJECT = "demo"


@schemathesis.hook
def map_query(context, query):
    if isinstance(query, dict):
        query.pop("wait", None)
        query.pop("after", None)
    return query


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    operation = context.operation
    deletes_project = operation is not None and (
        operation.method.upper() == "DELETE" and operation.path == "/v1/projects/{project}"
    )
    if isinstance(path_parameters, dict) and "project" in path_parameters and not deletes_project:
        path_parameters["project"] = PROJECT
    return path_parameters

