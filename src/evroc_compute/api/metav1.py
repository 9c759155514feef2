"""The meta.k8s.io/v1 types that every API document refers to, as kube-apiserver names them.

ObjectMeta is `meta.OBJECT_META` (what admission checks); ListMeta, Status, DeleteOptions,
WatchEvent, Patch and the rest are here so that a document's references resolve and
`kubectl explain` can describe `metadata`. `ref(name)` makes a reference in the caller's
document style (`#/definitions/...` in Swagger 2.0).
"""

from __future__ import annotations

from collections.abc import Callable

from evroc_compute.api.meta import OBJECT_META
from evroc_compute.api.schema import Schema, array, boolean, free_form, integer, obj, string

PREFIX = "io.k8s.apimachinery.pkg.apis.meta.v1."
OBJECT_META_NAME = PREFIX + "ObjectMeta"
LIST_META_NAME = PREFIX + "ListMeta"
STATUS_NAME = PREFIX + "Status"
PATCH_NAME = PREFIX + "Patch"

Ref = Callable[[str], Schema]


def _time(description: str) -> Schema:
    return {"type": "string", "format": "date-time", "description": description}


def definitions(ref: Ref) -> dict[str, Schema]:
    """name -> schema of each shared type, referring to each other through `ref`."""
    object_meta = {**OBJECT_META, "properties": {
        **OBJECT_META["properties"],
        "ownerReferences": array(ref(PREFIX + "OwnerReference"),
                                 "Objects depended on by this object.",
                                 list_map_keys=("uid",)),
        "managedFields": array(ref(PREFIX + "ManagedFieldsEntry"),
                               "Which field managers own which fields. Set by the server."),
    }}
    cause = obj(
        "StatusCause provides more information about an api.Status failure.",
        reason=string("A machine-readable description of the cause of the error."),
        message=string("A human-readable description of the cause of the error."),
        field=string("The field of the resource that has caused this error, e.g. "
                     "`spec.diskRefs[0].name`."))
    list_meta = obj(
        "ListMeta describes metadata that synthetic resources must have, including lists.",
        resourceVersion=string("The version of the list: the store's revision when it was "
                               "read; watch from it to see every later change."),
        selfLink=string("Deprecated; not set by this server."),
        remainingItemCount=integer("The number of items after this page."))
    list_meta["properties"]["continue"] = string(  # a Python keyword, so not a kwarg above
        "Set when the list was cut by `limit`: pass it to read the next page of the same "
        "snapshot.")
    return {
        OBJECT_META_NAME: object_meta,
        LIST_META_NAME: list_meta,
        PREFIX + "OwnerReference": obj(
            "An object this object depends on; the garbage collector deletes this object "
            "when all its owners are gone.", required=("apiVersion", "kind", "name", "uid"),
            apiVersion=string("API version of the referent."),
            kind=string("Kind of the referent."),
            name=string("Name of the referent."),
            uid=string("UID of the referent."),
            controller=boolean("If true, this reference points to the managing controller."),
            blockOwnerDeletion=boolean("If true, the owner cannot be deleted before this "
                                       "object is.")),
        PREFIX + "ManagedFieldsEntry": obj(
            "Which fields a field manager owns, and by which operation.",
            manager=string("The name of the workflow that manages these fields."),
            operation=string("Apply or Update.", enum=("Apply", "Update")),
            apiVersion=string("The version of the resource the fields are in."),
            time=_time("When these fields were last set."),
            fieldsType=string("The format of fieldsV1: always FieldsV1."),
            fieldsV1=ref(PREFIX + "FieldsV1"),
            subresource=string("The subresource used to update the object, e.g. status.")),
        PREFIX + "FieldsV1": free_form("A trie of field paths (`f:spec`, `f:replicas`, ...)."),
        STATUS_NAME: obj(
            "Status is the return value for calls that do not return other objects, and "
            "the body of every error.",
            apiVersion=string("Always v1."), kind=string("Always Status."),
            metadata=ref(LIST_META_NAME),
            status=string("Success or Failure."),
            message=string("A human-readable description of the status of this operation."),
            reason=string("A machine-readable reason, e.g. NotFound, AlreadyExists, Invalid."),
            details=ref(PREFIX + "StatusDetails"),
            code=integer("The HTTP status code.")),
        PREFIX + "StatusDetails": obj(
            "More detail about a Status: the object concerned and the causes.",
            name=string("The name of the object concerned."),
            group=string("Its API group."),
            kind=string("Its kind (the resource, for NotFound and Conflict)."),
            uid=string("Its UID."),
            causes=array(ref(PREFIX + "StatusCause"), "The individual problems."),
            retryAfterSeconds=integer("Seconds to wait before retrying.")),
        PREFIX + "StatusCause": cause,
        PREFIX + "DeleteOptions": obj(
            "Options for a DELETE.",
            apiVersion=string("Optional."), kind=string("Optional."),
            dryRun=array(string(), "All: process the request without persisting it."),
            gracePeriodSeconds=integer("Accepted and ignored: objects are deleted at once."),
            preconditions=ref(PREFIX + "Preconditions"),
            propagationPolicy=string("Orphan, Background or Foreground.",
                                     enum=("Orphan", "Background", "Foreground")),
            orphanDependents=boolean("Deprecated: use propagationPolicy.")),
        PREFIX + "Preconditions": obj(
            "Must be fulfilled before a deletion is carried out.",
            resourceVersion=string("The target's resourceVersion."),
            uid=string("The target's UID.")),
        PREFIX + "WatchEvent": obj(
            "One event of a watch stream.", required=("type", "object"),
            type=string("ADDED, MODIFIED, DELETED, BOOKMARK or ERROR."),
            object=ref("io.k8s.apimachinery.pkg.runtime.RawExtension")),
        "io.k8s.apimachinery.pkg.runtime.RawExtension": free_form(
            "The object of a watch event: the full object, or a Status for ERROR."),
        PATCH_NAME: free_form(
            "A patch: a JSON merge patch, a JSON patch (a list of operations) or an apply "
            "configuration, as the request's Content-Type says."),
        PREFIX + "Time": {"type": "string", "format": "date-time",
                          "description": "An RFC 3339 time, to the second."},
        PREFIX + "MicroTime": {"type": "string", "format": "date-time",
                               "description": "An RFC 3339 time with microseconds."},
    }
