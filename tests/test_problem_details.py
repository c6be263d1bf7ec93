"""Problem details in every form the platform writes them (``connector.errors.Problem``):
``errors`` as an object or as a list of error objects, ``title``/``status`` also spelled
``message``/``statusCode``; and how an error names them."""

from __future__ import annotations

from typing import Any

import pytest

from connector.errors import (
    ApiError,
    NotFoundError,
    Problem,
    ValidationError,
    error_for_status,
)


def test_errors_as_an_object_of_field_messages() -> None:
    problem = Problem.from_response_body(
        400,
        {
            "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
            "title": "Bad Request",
            "status": 400,
            "detail": "One or more validation errors occurred.",
            "traceId": "00-abc-def-00",
            "errors": {"email": ["A valid email address is required."], "name": "Too long."},
        },
    )
    assert problem.title == "Bad Request"
    assert problem.trace_id == "00-abc-def-00"
    assert problem.field_errors == {
        "email": ["A valid email address is required."],
        "name": ["Too long."],
    }


def test_errors_as_a_list_of_error_objects() -> None:
    problem = Problem.from_response_body(
        400,
        {
            "type": "https://api.platform.softwareone.com/errors/commerce#MPTCOM03-0078",
            "title": "Bad Request",
            "status": 400,
            "errors": [
                {
                    "message": "Email is not valid.",
                    "properties": ["email"],
                    "id": "MPTCOM03-0078",
                    "parameters": {"value": "x"},
                },
                {"message": "Two fields disagree.", "properties": ["from", "to"]},
                {"message": "Something general.", "properties": [], "id": "MPT-1"},
            ],
        },
    )
    assert problem.field_errors == {
        "email": ["Email is not valid."],
        "from": ["Two fields disagree."],
        "to": ["Two fields disagree."],
        "": ["Something general."],
    }
    assert problem.error_ids == ("MPTCOM03-0078", "MPT-1")
    message = str(error_for_status("POST", "/batches", problem))
    assert "email: Email is not valid." in message
    assert "Something general." in message and ": Something general" not in message


@pytest.mark.parametrize(
    "body",
    [
        {"statusCode": 404, "message": "Contact CTT-0000-0001 not found"},
        {"status": 404, "title": "Contact CTT-0000-0001 not found"},
    ],
)
def test_status_code_and_message_spellings(body: dict[str, Any]) -> None:
    problem = Problem.from_response_body(None, body)
    assert problem.status == 404
    assert problem.title == "Contact CTT-0000-0001 not found"
    # The HTTP status wins over the body's when both are there.
    assert Problem.from_response_body(400, body).status == 400


def test_not_found_is_read_from_a_400_detail_but_not_from_field_errors() -> None:
    gone = Problem.from_response_body(
        400, {"title": "Bad Request", "detail": "Contact CTT-0001-0002 was not found."}
    )
    assert gone.says_not_found
    field = Problem.from_response_body(
        400, {"title": "Bad Request", "errors": {"optOuts": ["Category NTC-1 not found."]}}
    )
    assert not field.says_not_found
    assert Problem.from_response_body(404, None).says_not_found


def test_a_body_that_is_not_problem_details_keeps_the_status() -> None:
    assert Problem.from_response_body(502, "<html>bad gateway</html>") == Problem(status=502)
    assert Problem.from_response_body(400, {"errors": "odd"}).field_errors == {}
    assert isinstance(error_for_status("GET", "/x", Problem(404)), NotFoundError)
    assert isinstance(error_for_status("GET", "/x", Problem(400)), ValidationError)
    assert isinstance(error_for_status("GET", "/x", Problem(418)), ApiError)
