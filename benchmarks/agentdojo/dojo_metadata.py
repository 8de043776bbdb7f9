"""Tool metadata for AgentDojo's four suites, and each suite's trusted directory.

The metadata is what a deployer declares about each tool; the information-flow policy
(``policies/agent/infoflow.rego``) reads only these keys, never the tool names:

* ``trust: "untrusted"``: the output may carry text written by a third party (web pages,
  received emails, shared files, reviews, the counterparty's transaction subjects).
  ``trust: "internal"`` marks content written by authenticated members of the user's
  own organisation (Slack messages between workspace members); it does not taint.
* ``personal_data``: the output holds the user's personal data.
* ``read_only``: the call changes nothing and sends nothing anywhere.
* ``egress``: ``{"destinations": [...], "content": [...], "addressee": ...}``: the call
  sends data, money or access to the destinations named by those arguments.
* ``destructive``: the call deletes data or changes account settings.

The trusted directory of a task is taken from its environment before the agent runs:
who the user already deals with (mailbox contacts, meeting participants, drive
collaborators, past and scheduled payees, workspace members and channels).
"""

from __future__ import annotations

from typing import Any

__all__ = ["TOOL_METADATA", "ROLE", "directory_for", "tool_roles"]

ROLE = "assistant_user"
"""The role of the benchmark's user; every suite tool is permitted for it."""

_READ: dict[str, Any] = {"read_only": True}
_UNTRUSTED: dict[str, Any] = {"read_only": True, "trust": "untrusted"}
_INTERNAL: dict[str, Any] = {"read_only": True, "trust": "internal"}
_PERSONAL: dict[str, Any] = {"read_only": True, "personal_data": True}
_WRITE: dict[str, Any] = {}
_DESTRUCTIVE: dict[str, Any] = {"destructive": True}


def _egress(*destinations: str, content: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    flow: dict[str, Any] = {"destinations": list(destinations), "content": list(content)}
    flow.update(extra)
    return {"egress": flow}


_EMAIL = _egress("recipients", "cc", "bcc", content=("subject", "body"))
_CALENDAR_EVENT = _egress("participants", content=("title", "description", "location"))

TOOL_METADATA: dict[str, dict[str, dict[str, Any]]] = {
    "workspace": {
        "get_unread_emails": _UNTRUSTED,
        "get_received_emails": _UNTRUSTED,
        "get_sent_emails": _UNTRUSTED,
        "get_draft_emails": _UNTRUSTED,
        "search_emails": _UNTRUSTED,
        "search_calendar_events": _UNTRUSTED,
        "get_day_calendar_events": _UNTRUSTED,
        "search_files": _UNTRUSTED,
        "search_files_by_filename": _UNTRUSTED,
        "get_file_by_id": _UNTRUSTED,
        "list_files": _UNTRUSTED,
        "search_contacts_by_name": _READ,
        "search_contacts_by_email": _READ,
        "get_current_day": _READ,
        "send_email": _EMAIL,
        "share_file": _egress("email"),
        "create_calendar_event": _CALENDAR_EVENT,
        "add_calendar_event_participants": _egress("participants"),
        "delete_email": _DESTRUCTIVE,
        "delete_file": _DESTRUCTIVE,
        "cancel_calendar_event": _DESTRUCTIVE,
        "create_file": _WRITE,
        "append_to_file": _WRITE,
        "reschedule_calendar_event": _WRITE,
    },
    "travel": {
        "get_rating_reviews_for_hotels": _UNTRUSTED,
        "get_rating_reviews_for_restaurants": _UNTRUSTED,
        "get_rating_reviews_for_car_rental": _UNTRUSTED,
        "search_calendar_events": _UNTRUSTED,
        "get_day_calendar_events": _UNTRUSTED,
        "get_user_information": _PERSONAL,
        "get_all_hotels_in_city": _READ,
        "get_hotels_prices": _READ,
        "get_hotels_address": _READ,
        "get_all_restaurants_in_city": _READ,
        "get_cuisine_type_for_restaurants": _READ,
        "get_restaurants_address": _READ,
        "get_dietary_restrictions_for_all_restaurants": _READ,
        "get_contact_information_for_restaurants": _READ,
        "get_price_for_restaurants": _READ,
        "check_restaurant_opening_hours": _READ,
        "get_all_car_rental_companies_in_city": _READ,
        "get_car_types_available": _READ,
        "get_car_fuel_options": _READ,
        "get_car_rental_address": _READ,
        "get_car_price_per_day": _READ,
        "get_flight_information": _READ,
        "send_email": _EMAIL,
        "create_calendar_event": _CALENDAR_EVENT,
        "reserve_hotel": _egress("hotel"),
        "reserve_restaurant": _egress("restaurant"),
        "reserve_car_rental": _egress("company"),
        "cancel_calendar_event": _DESTRUCTIVE,
    },
    "banking": {
        "read_file": _UNTRUSTED,
        "get_most_recent_transactions": _UNTRUSTED,
        "get_scheduled_transactions": _READ,
        "get_iban": _READ,
        "get_balance": _READ,
        "get_user_info": _PERSONAL,
        "send_money": _egress("recipient", content=("subject",)),
        "schedule_transaction": _egress("recipient", content=("subject",)),
        "update_scheduled_transaction": _egress("recipient", content=("subject",)),
        "update_password": _DESTRUCTIVE,
        "update_user_info": _DESTRUCTIVE,
    },
    "slack": {
        "get_channels": _UNTRUSTED,
        "get_webpage": {**_egress("url"), "trust": "untrusted"},
        "read_channel_messages": _INTERNAL,
        "read_inbox": _INTERNAL,
        "get_users_in_channel": _READ,
        "send_direct_message": _egress("recipient", content=("body",)),
        "send_channel_message": _egress("channel", content=("body",)),
        "post_webpage": _egress("url", content=("content",)),
        "invite_user_to_slack": _egress("user_email", addressee="user"),
        "add_user_to_channel": _egress("user", "channel"),
        "remove_user_from_slack": _DESTRUCTIVE,
    },
}


def tool_roles(suite: str) -> dict[str, list[str]]:
    """``data.agent.config.tool_roles`` for a suite: every tool permitted for ``ROLE``."""
    return {name: [ROLE] for name in TOOL_METADATA[suite]}


def directory_for(suite: str, env: Any) -> list[str]:
    """The trusted directory of a task: who the user already deals with, from ``env``."""
    entries: set[str] = set()
    if suite == "workspace":
        entries.add(env.inbox.account_email)
        entries.update(contact.email for contact in env.inbox.contact_list)
        for event in env.calendar.events.values():
            entries.update(event.participants)
        for file in env.cloud_drive.files.values():
            entries.add(file.owner)
            entries.update(file.shared_with)
    elif suite == "travel":
        entries.add(env.user.email)
        entries.update(contact.email for contact in env.inbox.contact_list)
    elif suite == "banking":
        account = env.bank_account
        entries.add(account.iban)
        for transaction in [*account.transactions, *account.scheduled_transactions]:
            entries.update((transaction.sender, transaction.recipient))
        entries.discard("me")
    elif suite == "slack":
        entries.update(env.slack.users)
        entries.update(env.slack.channels)
    else:
        raise ValueError(f"suite must be one of {sorted(TOOL_METADATA)}, not {suite!r}")
    return sorted(e for e in entries if isinstance(e, str) and e)
