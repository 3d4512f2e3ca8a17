import Hummingbird
import NIOCore

/// Long by nature: the file is the whole document. Code lives elsewhere.
///
/// The v1 API as an OpenAPI 3.1 document, served at `GET /openapi.json`. Kept by hand next to
/// the routes it describes: `OpenAPITests` checks it lists exactly the router's paths and
/// methods, and `Tests/contract/run.sh` runs schemathesis against a live server with it.
extension SpoolAPI {
    @Sendable func openAPI(_ request: Request, context: BasicRequestContext) async throws -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(string: Self.openAPIDocument)))
    }

    static let openAPIDocument = #"""
{
  "openapi": "3.1.0",
  "info": {
    "title": "Spool",
    "version": "1",
    "description": "A durable job server for exclusive hardware: jobs are stored before they are acknowledged and run one at a time per slot. Errors are RFC 9457 application/problem+json. A known path asked with a method it does not serve answers 405 with Allow; an unknown path answers 404."
  },
  "tags": [
    {
      "name": "jobs"
    },
    {
      "name": "events"
    },
    {
      "name": "server"
    },
    {
      "name": "dashboard"
    }
  ],
  "paths": {
    "/healthz": {
      "get": {
        "operationId": "health",
        "tags": [
          "server"
        ],
        "summary": "Liveness and readiness",
        "responses": {
          "200": {
            "description": "Serving: status `ok`, or `degraded` while a slot is unhealthy for a worker type (jobs of that type wait).",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Health"
                }
              }
            }
          },
          "503": {
            "description": "Draining during shutdown (status `draining`), or `degraded` while the job store keeps failing, with the reasons in `problems`.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Health"
                }
              },
              "application/problem+json": {
                "schema": {
                  "$ref": "#/components/schemas/Problem"
                }
              }
            }
          },
          "500": {
            "$ref": "#/components/responses/InternalError"
          }
        }
      }
    },
    "/v1/types": {
      "get": {
        "operationId": "listTypes",
        "tags": [
          "server"
        ],
        "summary": "The job types this server accepts",
        "responses": {
          "200": {
            "description": "The types, sorted by name.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/TypeList"
                }
              }
            }
          }
        }
      }
    },
    "/v1/jobs": {
      "post": {
        "operationId": "submitJob",
        "tags": [
          "jobs"
        ],
        "summary": "Submit a job",
        "description": "Answers once the job is durably stored.",
        "parameters": [
          {
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "The same key and body again answer 200 with the original job; the same key with another body is a 409. 1 to 255 bytes.",
            "schema": {
              "type": "string",
              "minLength": 1,
              "maxLength": 255
            }
          }
        ],
        "requestBody": {
          "required": true,
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/SubmitBody"
              },
              "examples": {
                "noop": {
                  "value": {
                    "type": "noop"
                  }
                },
                "files": {
                  "value": {
                    "type": "files",
                    "priority": 1
                  }
                },
                "echo": {
                  "value": {
                    "type": "echo",
                    "input": {
                      "word": "hello"
                    },
                    "priority": 5,
                    "timeout_s": 10
                  }
                }
              }
            }
          }
        },
        "responses": {
          "201": {
            "description": "Stored and queued.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Job"
                }
              }
            },
            "headers": {
              "Location": {
                "required": true,
                "description": "The job's URL.",
                "schema": {
                  "type": "string",
                  "pattern": "^/v1/jobs/job_[0-9a-hjkmnp-tv-z]{26}$"
                }
              }
            },
            "links": {
              "GetJob": {
                "operationId": "getJob",
                "parameters": {
                  "id": "$response.body#/id"
                }
              },
              "CancelJob": {
                "operationId": "cancelJob",
                "parameters": {
                  "id": "$response.body#/id"
                }
              },
              "GetJobLogs": {
                "operationId": "getJobLogs",
                "parameters": {
                  "id": "$response.body#/id"
                }
              },
              "ListJobOutputs": {
                "operationId": "listJobOutputs",
                "parameters": {
                  "id": "$response.body#/id"
                }
              }
            }
          },
          "200": {
            "description": "An earlier submit with the same Idempotency-Key and body: the original job.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Job"
                }
              }
            },
            "headers": {
              "Location": {
                "required": true,
                "description": "The job's URL.",
                "schema": {
                  "type": "string",
                  "pattern": "^/v1/jobs/job_[0-9a-hjkmnp-tv-z]{26}$"
                }
              }
            },
            "links": {
              "GetJob": {
                "operationId": "getJob",
                "parameters": {
                  "id": "$response.body#/id"
                }
              },
              "CancelJob": {
                "operationId": "cancelJob",
                "parameters": {
                  "id": "$response.body#/id"
                }
              },
              "GetJobLogs": {
                "operationId": "getJobLogs",
                "parameters": {
                  "id": "$response.body#/id"
                }
              },
              "ListJobOutputs": {
                "operationId": "listJobOutputs",
                "parameters": {
                  "id": "$response.body#/id"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "409": {
            "$ref": "#/components/responses/Conflict"
          },
          "413": {
            "$ref": "#/components/responses/ContentTooLarge"
          },
          "415": {
            "$ref": "#/components/responses/UnsupportedMediaType"
          },
          "422": {
            "$ref": "#/components/responses/Unprocessable"
          },
          "503": {
            "$ref": "#/components/responses/SubmitUnavailable"
          },
          "500": {
            "$ref": "#/components/responses/InternalError"
          }
        }
      },
      "get": {
        "operationId": "listJobs",
        "tags": [
          "jobs"
        ],
        "summary": "Jobs, newest first",
        "parameters": [
          {
            "name": "status",
            "in": "query",
            "schema": {
              "$ref": "#/components/schemas/JobState"
            }
          },
          {
            "name": "type",
            "in": "query",
            "schema": {
              "type": "string"
            }
          },
          {
            "name": "limit",
            "in": "query",
            "schema": {
              "type": "integer",
              "minimum": 1,
              "maximum": 500,
              "default": 50
            }
          },
          {
            "name": "cursor",
            "in": "query",
            "description": "A next_cursor from an earlier page.",
            "schema": {
              "type": "integer",
              "minimum": 1,
              "maximum": 9223372036854775807
            }
          }
        ],
        "responses": {
          "200": {
            "description": "One page.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/JobPage"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "503": {
            "$ref": "#/components/responses/Unavailable"
          },
          "500": {
            "$ref": "#/components/responses/InternalError"
          }
        }
      }
    },
    "/v1/jobs/{id}": {
      "get": {
        "operationId": "getJob",
        "tags": [
          "jobs"
        ],
        "summary": "One job",
        "parameters": [
          {
            "name": "id",
            "in": "path",
            "required": true,
            "schema": {
              "$ref": "#/components/schemas/JobID"
            }
          },
          {
            "name": "wait",
            "in": "query",
            "description": "Hold the request until the job's state changes or this many seconds pass (at most 60; more is taken as 60). A finished job answers at once.",
            "schema": {
              "type": "number",
              "minimum": 0
            }
          }
        ],
        "responses": {
          "200": {
            "description": "The job.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Job"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "404": {
            "$ref": "#/components/responses/NotFound"
          },
          "503": {
            "$ref": "#/components/responses/Unavailable"
          },
          "500": {
            "$ref": "#/components/responses/InternalError"
          }
        }
      }
    },
    "/v1/jobs/{id}/cancel": {
      "post": {
        "operationId": "cancelJob",
        "tags": [
          "jobs"
        ],
        "summary": "Cancel a queued or running job",
        "responses": {
          "200": {
            "description": "It was queued: canceled at once.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Job"
                }
              }
            }
          },
          "202": {
            "description": "It is running: stopping (SIGTERM, then SIGKILL after the kill grace).",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Job"
                }
              }
            }
          },
          "404": {
            "$ref": "#/components/responses/NotFound"
          },
          "409": {
            "$ref": "#/components/responses/Conflict"
          },
          "503": {
            "$ref": "#/components/responses/Unavailable"
          },
          "500": {
            "$ref": "#/components/responses/InternalError"
          }
        },
        "parameters": [
          {
            "name": "id",
            "in": "path",
            "required": true,
            "schema": {
              "$ref": "#/components/schemas/JobID"
            }
          }
        ]
      }
    },
    "/v1/jobs/{id}/logs": {
      "get": {
        "operationId": "getJobLogs",
        "tags": [
          "jobs"
        ],
        "summary": "The job's stdout and stderr",
        "parameters": [
          {
            "name": "id",
            "in": "path",
            "required": true,
            "schema": {
              "$ref": "#/components/schemas/JobID"
            }
          },
          {
            "name": "offset",
            "in": "query",
            "description": "Byte offset to start from.",
            "schema": {
              "type": "integer",
              "minimum": 0,
              "maximum": 9223372036854775807,
              "default": 0
            }
          }
        ],
        "responses": {
          "200": {
            "description": "The log from `offset` (empty at or past its end).",
            "headers": {
              "Spool-Next-Offset": {
                "required": true,
                "description": "Where to continue: the log's size, or `offset` if that is larger.",
                "schema": {
                  "type": "string",
                  "pattern": "^[0-9]+$"
                }
              }
            },
            "content": {
              "text/plain": {
                "schema": {
                  "type": "string"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "404": {
            "$ref": "#/components/responses/NotFound"
          },
          "503": {
            "$ref": "#/components/responses/Unavailable"
          },
          "500": {
            "$ref": "#/components/responses/InternalError"
          }
        }
      }
    },
    "/v1/jobs/{id}/outputs": {
      "get": {
        "operationId": "listJobOutputs",
        "tags": [
          "jobs"
        ],
        "summary": "The job's output files",
        "parameters": [
          {
            "name": "id",
            "in": "path",
            "required": true,
            "schema": {
              "$ref": "#/components/schemas/JobID"
            }
          }
        ],
        "responses": {
          "200": {
            "description": "Regular files under the job's output folder, sorted by name.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/OutputList"
                }
              }
            }
          },
          "404": {
            "$ref": "#/components/responses/NotFound"
          },
          "503": {
            "$ref": "#/components/responses/Unavailable"
          },
          "500": {
            "$ref": "#/components/responses/InternalError"
          }
        }
      }
    },
    "/v1/jobs/{id}/outputs/{name}": {
      "get": {
        "operationId": "getJobOutput",
        "tags": [
          "jobs"
        ],
        "summary": "One output file",
        "description": "`name` is the file's path under the outputs folder; it may contain `/` (sub-folders), sent as is or percent-encoded.",
        "parameters": [
          {
            "name": "id",
            "in": "path",
            "required": true,
            "schema": {
              "$ref": "#/components/schemas/JobID"
            }
          },
          {
            "name": "name",
            "in": "path",
            "required": true,
            "schema": {
              "type": "string",
              "minLength": 1
            }
          }
        ],
        "responses": {
          "200": {
            "description": "The file, with a content type from its extension (application/octet-stream when unknown).",
            "content": {
              "*/*": {
                "schema": {
                  "description": "The file's bytes, whatever they are."
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "404": {
            "$ref": "#/components/responses/NotFound"
          },
          "503": {
            "$ref": "#/components/responses/Unavailable"
          },
          "500": {
            "$ref": "#/components/responses/InternalError"
          }
        }
      }
    },
    "/v1/queue": {
      "get": {
        "operationId": "getQueue",
        "tags": [
          "server"
        ],
        "summary": "Queue depth and slots",
        "responses": {
          "200": {
            "description": "How many jobs wait, whether submits are accepted, and each slot.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Queue"
                }
              }
            }
          },
          "503": {
            "$ref": "#/components/responses/Unavailable"
          },
          "500": {
            "$ref": "#/components/responses/InternalError"
          }
        }
      }
    },
    "/v1/nodes": {
      "get": {
        "operationId": "listNodes",
        "tags": [
          "server"
        ],
        "summary": "The nodes sharing this queue",
        "description": "With a shared (PostgreSQL) store: every node heard from in the last day, its role, slots, running jobs and last heartbeat; `alive` is false once it has been silent for a lease. On one machine: this server.",
        "responses": {
          "200": {
            "description": "The nodes, by name.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Nodes"
                }
              }
            }
          },
          "503": {
            "$ref": "#/components/responses/Unavailable"
          },
          "500": {
            "$ref": "#/components/responses/InternalError"
          }
        }
      }
    },
    "/v1/events": {
      "get": {
        "operationId": "streamAllEvents",
        "tags": [
          "events"
        ],
        "summary": "Every job's events (Server-Sent Events)",
        "description": "A stream that stays open: `id:` is the event's global sequence number, `event:` is state, progress, log or outputs, `data:` the event's JSON. Starts at now unless resumed with Last-Event-ID or ?after.",
        "parameters": [
          {
            "name": "Last-Event-ID",
            "in": "header",
            "description": "Resume after this event id (wins over ?after).",
            "schema": {
              "type": "integer",
              "minimum": 0,
              "maximum": 9223372036854775807
            }
          },
          {
            "name": "after",
            "in": "query",
            "description": "Resume after this event id.",
            "schema": {
              "type": "integer",
              "minimum": 0,
              "maximum": 9223372036854775807
            }
          }
        ],
        "responses": {
          "200": {
            "description": "Server-Sent Events; the schema describes one event (OpenAPI 3.1 style). A `retry: 2000` field opens the stream and `: keep-alive` comments come every 15 s of silence.",
            "content": {
              "text/event-stream": {
                "schema": {
                  "$ref": "#/components/schemas/Event"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          }
        }
      }
    },
    "/v1/jobs/{id}/events": {
      "get": {
        "operationId": "streamJobEvents",
        "tags": [
          "events"
        ],
        "summary": "One job's events (Server-Sent Events)",
        "description": "From the job's first event (or the one after Last-Event-ID / ?after); ends after the job's final state and its outputs event.",
        "parameters": [
          {
            "name": "id",
            "in": "path",
            "required": true,
            "schema": {
              "$ref": "#/components/schemas/JobID"
            }
          },
          {
            "name": "Last-Event-ID",
            "in": "header",
            "description": "Resume after this event id (wins over ?after).",
            "schema": {
              "type": "integer",
              "minimum": 0,
              "maximum": 9223372036854775807
            }
          },
          {
            "name": "after",
            "in": "query",
            "description": "Resume after this event id.",
            "schema": {
              "type": "integer",
              "minimum": 0,
              "maximum": 9223372036854775807
            }
          }
        ],
        "responses": {
          "200": {
            "description": "Server-Sent Events; the schema describes one event (OpenAPI 3.1 style). A `retry: 2000` field opens the stream and `: keep-alive` comments come every 15 s of silence.",
            "content": {
              "text/event-stream": {
                "schema": {
                  "$ref": "#/components/schemas/Event"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "404": {
            "$ref": "#/components/responses/NotFound"
          },
          "503": {
            "$ref": "#/components/responses/Unavailable"
          },
          "500": {
            "$ref": "#/components/responses/InternalError"
          }
        }
      }
    },
    "/v1/jobs/{id}/webhooks": {
      "get": {
        "operationId": "listJobWebhooks",
        "tags": [
          "jobs"
        ],
        "summary": "The job's webhook deliveries",
        "description": "Each delivery and its attempts, oldest first; empty when the job has no webhook.",
        "parameters": [
          {
            "name": "id",
            "in": "path",
            "required": true,
            "schema": {
              "$ref": "#/components/schemas/JobID"
            }
          }
        ],
        "responses": {
          "200": {
            "description": "The deliveries.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/WebhookDeliveryList"
                }
              }
            }
          },
          "404": {
            "$ref": "#/components/responses/NotFound"
          },
          "503": {
            "$ref": "#/components/responses/Unavailable"
          },
          "500": {
            "$ref": "#/components/responses/InternalError"
          }
        }
      }
    },
    "/metrics": {
      "get": {
        "operationId": "metrics",
        "tags": [
          "server"
        ],
        "summary": "Prometheus metrics",
        "responses": {
          "200": {
            "description": "Prometheus text exposition format 0.0.4.",
            "content": {
              "text/plain": {
                "schema": {
                  "type": "string"
                }
              }
            }
          },
          "404": {
            "description": "This server does not export metrics.",
            "content": {
              "application/problem+json": {
                "schema": {
                  "allOf": [
                    {
                      "$ref": "#/components/schemas/Problem"
                    },
                    {
                      "properties": {
                        "status": {
                          "const": 404
                        }
                      }
                    }
                  ]
                }
              }
            }
          }
        }
      }
    },
    "/": {
      "get": {
        "operationId": "dashboard",
        "tags": [
          "dashboard"
        ],
        "summary": "The web dashboard",
        "responses": {
          "200": {
            "description": "The dashboard page; it uses only the public v1 API.",
            "content": {
              "text/html": {
                "schema": {
                  "type": "string"
                }
              }
            }
          }
        }
      }
    },
    "/dashboard.js": {
      "get": {
        "operationId": "dashboardScript",
        "tags": [
          "dashboard"
        ],
        "summary": "The dashboard's script",
        "responses": {
          "200": {
            "description": "JavaScript.",
            "content": {
              "text/javascript": {
                "schema": {
                  "type": "string"
                }
              }
            }
          }
        }
      }
    },
    "/dashboard.css": {
      "get": {
        "operationId": "dashboardStyle",
        "tags": [
          "dashboard"
        ],
        "summary": "The dashboard's style sheet",
        "responses": {
          "200": {
            "description": "CSS.",
            "content": {
              "text/css": {
                "schema": {
                  "type": "string"
                }
              }
            }
          }
        }
      }
    },
    "/openapi.json": {
      "get": {
        "operationId": "openAPI",
        "tags": [
          "server"
        ],
        "summary": "This document",
        "responses": {
          "200": {
            "description": "OpenAPI 3.1.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/OpenAPIDocument"
                }
              }
            }
          }
        }
      }
    }
  },
  "components": {
    "schemas": {
      "JobID": {
        "type": "string",
        "pattern": "^job_[0-9a-hjkmnp-tv-z]{26}$",
        "description": "`job_` and 26 Crockford base-32 characters (130 random bits).",
        "examples": [
          "job_3m1k9x0a2b4c6d8e0f2g4h6j8k"
        ]
      },
      "JobState": {
        "type": "string",
        "enum": [
          "queued",
          "running",
          "succeeded",
          "failed",
          "canceled"
        ]
      },
      "FailureReason": {
        "type": "string",
        "enum": [
          "exit_code",
          "signal",
          "timeout",
          "canceled",
          "interrupted",
          "spawn_failed",
          "error",
          "worker_lost",
          "node_lost"
        ]
      },
      "Timestamp": {
        "type": "string",
        "format": "date-time",
        "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$",
        "description": "RFC 3339 in UTC with six fractional digits."
      },
      "Progress": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "fraction",
          "message"
        ],
        "properties": {
          "fraction": {
            "type": "number",
            "minimum": 0,
            "maximum": 1
          },
          "message": {
            "type": [
              "string",
              "null"
            ],
            "maxLength": 500
          }
        }
      },
      "JobLinks": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "self",
          "cancel",
          "logs",
          "outputs"
        ],
        "properties": {
          "self": {
            "type": "string",
            "pattern": "^/v1/jobs/job_[0-9a-hjkmnp-tv-z]{26}$"
          },
          "cancel": {
            "type": "string",
            "pattern": "^/v1/jobs/job_[0-9a-hjkmnp-tv-z]{26}/cancel$"
          },
          "logs": {
            "type": "string",
            "pattern": "^/v1/jobs/job_[0-9a-hjkmnp-tv-z]{26}/logs$"
          },
          "outputs": {
            "type": "string",
            "pattern": "^/v1/jobs/job_[0-9a-hjkmnp-tv-z]{26}/outputs$"
          }
        }
      },
      "Job": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "id",
          "type",
          "state",
          "reason",
          "input",
          "priority",
          "timeout_s",
          "attempts",
          "max_attempts",
          "position",
          "progress",
          "created_at",
          "started_at",
          "finished_at",
          "exit_code",
          "signal",
          "error",
          "slot",
          "result",
          "links"
        ],
        "properties": {
          "id": {
            "$ref": "#/components/schemas/JobID"
          },
          "type": {
            "type": "string",
            "description": "The job type's name."
          },
          "state": {
            "$ref": "#/components/schemas/JobState"
          },
          "reason": {
            "oneOf": [
              {
                "$ref": "#/components/schemas/FailureReason"
              },
              {
                "type": "null"
              }
            ],
            "description": "Why a job failed or was canceled; null otherwise."
          },
          "input": {
            "description": "The input as submitted (an empty object when none was given); any JSON value but null."
          },
          "priority": {
            "type": "integer",
            "minimum": -1000000,
            "maximum": 1000000
          },
          "timeout_s": {
            "type": "number",
            "exclusiveMinimum": 0
          },
          "attempts": {
            "type": "integer",
            "minimum": 0
          },
          "max_attempts": {
            "type": "integer",
            "minimum": 1
          },
          "position": {
            "type": [
              "integer",
              "null"
            ],
            "minimum": 1,
            "description": "1-based queue position of a queued job on submit and GET /v1/jobs/{id}; null otherwise and on list pages."
          },
          "progress": {
            "oneOf": [
              {
                "$ref": "#/components/schemas/Progress"
              },
              {
                "type": "null"
              }
            ]
          },
          "created_at": {
            "$ref": "#/components/schemas/Timestamp"
          },
          "started_at": {
            "oneOf": [
              {
                "$ref": "#/components/schemas/Timestamp"
              },
              {
                "type": "null"
              }
            ]
          },
          "finished_at": {
            "oneOf": [
              {
                "$ref": "#/components/schemas/Timestamp"
              },
              {
                "type": "null"
              }
            ]
          },
          "exit_code": {
            "type": [
              "integer",
              "null"
            ]
          },
          "signal": {
            "type": [
              "integer",
              "null"
            ]
          },
          "error": {
            "type": [
              "string",
              "null"
            ]
          },
          "slot": {
            "type": [
              "integer",
              "null"
            ],
            "minimum": 0
          },
          "node": {
            "type": "string",
            "description": "With a shared (PostgreSQL) store: the node whose slot runs or last ran the job."
          },
          "result": {
            "description": "What a warm worker reported as the job's result; null when none."
          },
          "links": {
            "$ref": "#/components/schemas/JobLinks"
          },
          "eta": {
            "oneOf": [
              {
                "$ref": "#/components/schemas/Estimate"
              },
              {
                "type": "null"
              }
            ],
            "description": "Present only on queued jobs: when the job is likely to start, learned from recent run times; null until a job has finished, and on list pages and /v1/queue."
          },
          "webhook": {
            "type": "string",
            "description": "Present only when the job was submitted with a webhook."
          },
          "webhook_events": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/WebhookEvent"
            },
            "description": "Present (with webhook) only when the job was submitted with a webhook."
          },
          "cancel_requested": {
            "const": true,
            "description": "Present (true) only while a cancel is pending on a job that has not finished."
          }
        }
      },
      "Estimate": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "start_in_s",
          "start_at",
          "method"
        ],
        "properties": {
          "start_in_s": {
            "type": "number",
            "minimum": 0,
            "description": "Seconds from now, to a tenth."
          },
          "start_at": {
            "oneOf": [
              {
                "$ref": "#/components/schemas/Timestamp"
              },
              {
                "type": "null"
              }
            ]
          },
          "method": {
            "type": "string",
            "description": "How the estimate was worked out, in a sentence."
          }
        }
      },
      "WebhookEvent": {
        "type": "string",
        "enum": [
          "started",
          "progress",
          "completed"
        ]
      },
      "Event": {
        "description": "One event: `id` is the global sequence number (the Last-Event-ID to resume from), `event` its kind, `data` its JSON.",
        "oneOf": [
          {
            "type": "object",
            "required": [
              "id",
              "event",
              "data"
            ],
            "properties": {
              "id": {
                "type": "string",
                "pattern": "^[0-9]+$"
              },
              "event": {
                "const": "state"
              },
              "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {
                  "$ref": "#/components/schemas/StateEventData"
                }
              }
            }
          },
          {
            "type": "object",
            "required": [
              "id",
              "event",
              "data"
            ],
            "properties": {
              "id": {
                "type": "string",
                "pattern": "^[0-9]+$"
              },
              "event": {
                "const": "progress"
              },
              "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {
                  "$ref": "#/components/schemas/ProgressEventData"
                }
              }
            }
          },
          {
            "type": "object",
            "required": [
              "id",
              "event",
              "data"
            ],
            "properties": {
              "id": {
                "type": "string",
                "pattern": "^[0-9]+$"
              },
              "event": {
                "const": "log"
              },
              "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {
                  "$ref": "#/components/schemas/LogEventData"
                }
              }
            }
          },
          {
            "type": "object",
            "required": [
              "id",
              "event",
              "data"
            ],
            "properties": {
              "id": {
                "type": "string",
                "pattern": "^[0-9]+$"
              },
              "event": {
                "const": "outputs"
              },
              "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {
                  "$ref": "#/components/schemas/OutputsEventData"
                }
              }
            }
          }
        ]
      },
      "StateEventData": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "job",
          "type",
          "state",
          "attempts",
          "at"
        ],
        "description": "The job was accepted, started, finished, requeued or asked to cancel.",
        "properties": {
          "job": {
            "$ref": "#/components/schemas/JobID"
          },
          "type": {
            "type": "string"
          },
          "state": {
            "$ref": "#/components/schemas/JobState"
          },
          "attempts": {
            "type": "integer",
            "minimum": 0
          },
          "reason": {
            "$ref": "#/components/schemas/FailureReason"
          },
          "slot": {
            "type": "integer",
            "minimum": 0,
            "description": "While running."
          },
          "error": {
            "type": "string",
            "description": "Once finished, when there was one."
          },
          "cancel_requested": {
            "const": true
          },
          "at": {
            "$ref": "#/components/schemas/Timestamp"
          }
        }
      },
      "ProgressEventData": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "job",
          "fraction",
          "message",
          "at"
        ],
        "properties": {
          "job": {
            "$ref": "#/components/schemas/JobID"
          },
          "fraction": {
            "type": "number",
            "minimum": 0,
            "maximum": 1
          },
          "message": {
            "type": [
              "string",
              "null"
            ]
          },
          "at": {
            "$ref": "#/components/schemas/Timestamp"
          }
        }
      },
      "LogEventData": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "job",
          "text",
          "at"
        ],
        "description": "Lines the job wrote to its log, batched; capped per job (the full log is at /logs).",
        "properties": {
          "job": {
            "$ref": "#/components/schemas/JobID"
          },
          "text": {
            "type": "string"
          },
          "at": {
            "$ref": "#/components/schemas/Timestamp"
          }
        }
      },
      "OutputsEventData": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "job",
          "outputs",
          "at"
        ],
        "description": "The job's output files, once it has finished.",
        "properties": {
          "job": {
            "$ref": "#/components/schemas/JobID"
          },
          "at": {
            "$ref": "#/components/schemas/Timestamp"
          },
          "outputs": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "name",
                "size",
                "url"
              ],
              "properties": {
                "name": {
                  "type": "string"
                },
                "size": {
                  "type": "integer",
                  "minimum": 0
                },
                "url": {
                  "type": "string"
                }
              }
            }
          }
        }
      },
      "WebhookDeliveryList": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "deliveries"
        ],
        "properties": {
          "deliveries": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/WebhookDelivery"
            }
          }
        }
      },
      "WebhookDelivery": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "id",
          "event",
          "url",
          "state",
          "created_at",
          "next_attempt_at",
          "attempts"
        ],
        "properties": {
          "id": {
            "type": "integer"
          },
          "event": {
            "type": "string",
            "enum": [
              "job.started",
              "job.progress",
              "job.completed"
            ]
          },
          "url": {
            "type": "string"
          },
          "state": {
            "type": "string",
            "enum": [
              "pending",
              "delivered",
              "failed"
            ]
          },
          "created_at": {
            "$ref": "#/components/schemas/Timestamp"
          },
          "next_attempt_at": {
            "oneOf": [
              {
                "$ref": "#/components/schemas/Timestamp"
              },
              {
                "type": "null"
              }
            ]
          },
          "attempts": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "at",
                "duration_ms"
              ],
              "properties": {
                "at": {
                  "$ref": "#/components/schemas/Timestamp"
                },
                "duration_ms": {
                  "type": "number",
                  "minimum": 0
                },
                "status": {
                  "type": "integer",
                  "description": "The HTTP status the webhook answered, if it answered."
                },
                "error": {
                  "type": "string",
                  "description": "Why the attempt failed, if it did."
                }
              }
            }
          }
        }
      },
      "JobPage": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "jobs",
          "next_cursor"
        ],
        "properties": {
          "jobs": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/Job"
            }
          },
          "next_cursor": {
            "oneOf": [
              {
                "$ref": "#/components/schemas/Cursor"
              },
              {
                "type": "null"
              }
            ],
            "description": "Pass back as `cursor` for the next page; null on the last page."
          }
        }
      },
      "Cursor": {
        "type": "string",
        "pattern": "^[1-9][0-9]*$",
        "description": "Opaque to clients: pass it back as `cursor`."
      },
      "SubmitBody": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "type"
        ],
        "properties": {
          "type": {
            "type": "string",
            "description": "A job type this server accepts (GET /v1/types)."
          },
          "input": {
            "description": "The job's input, checked against the type's input_schema; null or absent means {}."
          },
          "priority": {
            "type": [
              "integer",
              "null"
            ],
            "minimum": -1000000,
            "maximum": 1000000,
            "description": "Higher runs first; default 0."
          },
          "timeout_s": {
            "type": [
              "number",
              "null"
            ],
            "exclusiveMinimum": 0,
            "description": "Seconds; at most the type's timeout_s (a larger value is a 422); default the type's."
          },
          "webhook": {
            "type": [
              "string",
              "null"
            ],
            "maxLength": 2048,
            "pattern": "^https?://[^/?#]",
            "description": "An http:// or https:// URL with a host (RFC 3986; a port, if any, from 1 to 65535) to POST the job's events to; by default only `completed`. A URL that does not parse is a 422."
          },
          "webhook_events": {
            "type": [
              "array",
              "null"
            ],
            "minItems": 1,
            "items": {
              "$ref": "#/components/schemas/WebhookEvent"
            },
            "description": "Which events go to the webhook; needs `webhook`."
          }
        },
        "dependentSchemas": {
          "webhook_events": {
            "if": {
              "properties": {
                "webhook_events": {
                  "type": "array"
                }
              }
            },
            "then": {
              "required": [
                "webhook"
              ],
              "properties": {
                "webhook": {
                  "type": "string"
                }
              }
            }
          }
        }
      },
      "Output": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "name",
          "size",
          "content_type",
          "url"
        ],
        "properties": {
          "name": {
            "type": "string",
            "minLength": 1
          },
          "size": {
            "type": "integer",
            "minimum": 0
          },
          "content_type": {
            "type": "string"
          },
          "url": {
            "type": "string",
            "pattern": "^/v1/jobs/job_[0-9a-hjkmnp-tv-z]{26}/outputs/."
          }
        }
      },
      "OutputList": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "outputs"
        ],
        "properties": {
          "outputs": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/Output"
            }
          }
        }
      },
      "Worker": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "id",
          "type",
          "phase",
          "pid",
          "jobs_run",
          "rss_mb",
          "vram_mb"
        ],
        "properties": {
          "id": {
            "type": "string"
          },
          "type": {
            "type": "string"
          },
          "phase": {
            "type": "string",
            "enum": [
              "starting",
              "ready",
              "busy",
              "stopping",
              "exited"
            ]
          },
          "pid": {
            "type": [
              "integer",
              "null"
            ]
          },
          "jobs_run": {
            "type": "integer",
            "minimum": 0
          },
          "rss_mb": {
            "type": [
              "number",
              "null"
            ]
          },
          "vram_mb": {
            "type": [
              "number",
              "null"
            ]
          }
        }
      },
      "WorkerHealth": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "type",
          "failures",
          "unhealthy",
          "last_error"
        ],
        "properties": {
          "type": {
            "type": "string"
          },
          "failures": {
            "type": "integer",
            "minimum": 0
          },
          "unhealthy": {
            "type": "boolean"
          },
          "last_error": {
            "type": "string"
          }
        }
      },
      "Slot": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "id",
          "gpu",
          "state",
          "job",
          "worker",
          "unhealthy"
        ],
        "properties": {
          "id": {
            "type": "integer",
            "minimum": 0
          },
          "gpu": {
            "type": [
              "string",
              "null"
            ]
          },
          "state": {
            "type": "string",
            "enum": [
              "idle",
              "busy"
            ]
          },
          "job": {
            "oneOf": [
              {
                "$ref": "#/components/schemas/Job"
              },
              {
                "type": "null"
              }
            ]
          },
          "worker": {
            "oneOf": [
              {
                "$ref": "#/components/schemas/Worker"
              },
              {
                "type": "null"
              }
            ]
          },
          "unhealthy": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/WorkerHealth"
            }
          }
        }
      },
      "Nodes": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "nodes",
          "this_node"
        ],
        "properties": {
          "this_node": {
            "type": "string",
            "description": "The answering node's name (`local` on one machine)."
          },
          "nodes": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "name",
                "role",
                "slots",
                "running",
                "started_at",
                "last_seen_s",
                "alive"
              ],
              "properties": {
                "name": {
                  "type": "string"
                },
                "role": {
                  "type": "string",
                  "enum": [
                    "all",
                    "api",
                    "agent"
                  ]
                },
                "slots": {
                  "type": "integer",
                  "minimum": 0
                },
                "running": {
                  "type": "integer",
                  "minimum": 0
                },
                "started_at": {
                  "$ref": "#/components/schemas/Timestamp"
                },
                "last_seen_s": {
                  "type": "number",
                  "minimum": 0
                },
                "alive": {
                  "type": "boolean"
                }
              }
            }
          }
        }
      },
      "Queue": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "queued",
          "accepting",
          "slots"
        ],
        "properties": {
          "queued": {
            "type": "integer",
            "minimum": 0
          },
          "accepting": {
            "type": "boolean"
          },
          "slots": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/Slot"
            }
          }
        }
      },
      "JobType": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "name",
          "mode",
          "timeout_s",
          "max_attempts",
          "command_input_keys"
        ],
        "properties": {
          "name": {
            "type": "string",
            "pattern": "^[A-Za-z0-9._-]+$"
          },
          "mode": {
            "type": "string",
            "enum": [
              "process",
              "worker"
            ]
          },
          "timeout_s": {
            "type": "number",
            "exclusiveMinimum": 0
          },
          "max_attempts": {
            "type": "integer",
            "minimum": 1
          },
          "command_input_keys": {
            "type": "array",
            "items": {
              "type": "string"
            }
          }
        }
      },
      "TypeList": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "types"
        ],
        "properties": {
          "types": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/JobType"
            }
          }
        }
      },
      "Health": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "status",
          "store",
          "slots",
          "queued",
          "unhealthy_workers"
        ],
        "properties": {
          "status": {
            "type": "string",
            "enum": [
              "ok",
              "degraded",
              "draining"
            ]
          },
          "store": {
            "type": "string"
          },
          "slots": {
            "type": "integer",
            "minimum": 0
          },
          "queued": {
            "type": [
              "integer",
              "null"
            ],
            "minimum": 0,
            "description": "Jobs waiting; null when the job store did not answer."
          },
          "problems": {
            "type": "array",
            "items": {
              "type": "string"
            },
            "description": "Why the server is degraded with 503: the job store keeps failing (a damaged or full disk, an unreachable database)."
          },
          "node": {
            "type": "string",
            "description": "This node's name, with a shared (PostgreSQL) store."
          },
          "unhealthy_workers": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "slot",
                "type",
                "last_error"
              ],
              "properties": {
                "slot": {
                  "type": "integer",
                  "minimum": 0
                },
                "type": {
                  "type": "string"
                },
                "last_error": {
                  "type": "string"
                }
              }
            }
          }
        }
      },
      "Problem": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "type",
          "title",
          "status",
          "detail",
          "instance"
        ],
        "description": "RFC 9457 problem details.",
        "properties": {
          "type": {
            "type": "string",
            "pattern": "^urn:spool:problem:[a-z0-9-]+$",
            "description": "`urn:spool:problem:` and a short stable code (not-found, invalid-input, …)."
          },
          "title": {
            "type": "string"
          },
          "status": {
            "type": "integer",
            "minimum": 400,
            "maximum": 599
          },
          "detail": {
            "type": "string"
          },
          "instance": {
            "type": "string",
            "description": "The request's path."
          },
          "errors": {
            "type": "array",
            "items": {
              "type": "string"
            },
            "minItems": 1,
            "description": "Each problem, where there are several."
          }
        }
      },
      "OpenAPIDocument": {
        "type": "object",
        "required": [
          "openapi",
          "info",
          "paths"
        ]
      }
    },
    "responses": {
      "BadRequest": {
        "description": "Malformed JSON or query parameter.",
        "content": {
          "application/problem+json": {
            "schema": {
              "allOf": [
                {
                  "$ref": "#/components/schemas/Problem"
                },
                {
                  "properties": {
                    "status": {
                      "const": 400
                    }
                  }
                }
              ]
            }
          }
        }
      },
      "NotFound": {
        "description": "No such job (an id that is not a job id is not found either).",
        "content": {
          "application/problem+json": {
            "schema": {
              "allOf": [
                {
                  "$ref": "#/components/schemas/Problem"
                },
                {
                  "properties": {
                    "status": {
                      "const": 404
                    }
                  }
                }
              ]
            }
          }
        }
      },
      "Conflict": {
        "description": "A conflict with the job's state or an earlier request.",
        "content": {
          "application/problem+json": {
            "schema": {
              "allOf": [
                {
                  "$ref": "#/components/schemas/Problem"
                },
                {
                  "properties": {
                    "status": {
                      "const": 409
                    }
                  }
                }
              ]
            }
          }
        }
      },
      "ContentTooLarge": {
        "description": "The body is over the server's limit (max_body_bytes, default 1 MiB).",
        "content": {
          "application/problem+json": {
            "schema": {
              "allOf": [
                {
                  "$ref": "#/components/schemas/Problem"
                },
                {
                  "properties": {
                    "status": {
                      "const": 413
                    }
                  }
                }
              ]
            }
          }
        }
      },
      "UnsupportedMediaType": {
        "description": "The body is not sent as application/json.",
        "content": {
          "application/problem+json": {
            "schema": {
              "allOf": [
                {
                  "$ref": "#/components/schemas/Problem"
                },
                {
                  "properties": {
                    "status": {
                      "const": 415
                    }
                  }
                }
              ]
            }
          }
        }
      },
      "Unprocessable": {
        "description": "Unknown fields or wrong types in the body, an unknown job type, or an input that fails the type's input_schema.",
        "content": {
          "application/problem+json": {
            "schema": {
              "allOf": [
                {
                  "$ref": "#/components/schemas/Problem"
                },
                {
                  "properties": {
                    "status": {
                      "const": 422
                    }
                  }
                }
              ]
            }
          }
        }
      },
      "Unavailable": {
        "description": "The job store cannot be reached right now (storage-unavailable).",
        "content": {
          "application/problem+json": {
            "schema": {
              "allOf": [
                {
                  "$ref": "#/components/schemas/Problem"
                },
                {
                  "properties": {
                    "status": {
                      "const": 503
                    }
                  }
                }
              ]
            }
          }
        },
        "headers": {
          "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {
              "type": "string",
              "pattern": "^[0-9]+$"
            },
            "required": true
          }
        }
      },
      "SubmitUnavailable": {
        "description": "The server is shutting down (shutting-down) or the job store cannot write (storage-unavailable); nothing was stored.",
        "content": {
          "application/problem+json": {
            "schema": {
              "allOf": [
                {
                  "$ref": "#/components/schemas/Problem"
                },
                {
                  "properties": {
                    "status": {
                      "const": 503
                    }
                  }
                }
              ]
            }
          }
        },
        "headers": {
          "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {
              "type": "string",
              "pattern": "^[0-9]+$"
            },
            "required": true
          }
        }
      },
      "InternalError": {
        "description": "An unexpected failure; the full error is in the server's log.",
        "content": {
          "application/problem+json": {
            "schema": {
              "allOf": [
                {
                  "$ref": "#/components/schemas/Problem"
                },
                {
                  "properties": {
                    "status": {
                      "const": 500
                    }
                  }
                }
              ]
            }
          }
        }
      }
    }
  }
}
"""#
}
