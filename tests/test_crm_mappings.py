"""Mappings: the ready-made presets on real export shapes, custom YAML mappings, their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from crm_files import ACME_YAML, brief, flags, make_workbook, read, reasons, write

from connector.crm import (
    CrmMappingError,
    load_mapping,
    mapping_from_dict,
)
from connector.errors import ConnectorError

# -- ready-made mappings -------------------------------------------------------------------


def test_salesforce_data_loader_export(tmp_path: Path) -> None:
    text = (
        '"ID","ACCOUNTID","LASTNAME","FIRSTNAME","SALUTATION","EMAIL","HASOPTEDOUTOFEMAIL",'
        '"ISEMAILBOUNCED","EMAILBOUNCEDREASON","EMAILBOUNCEDDATE"\n'
        '"0035g00000AbCdE","0015g00000XyZ","Lee","Ann","Ms.","ann@example.com","false",'
        '"false","",""\n'
        '"0035g00000AbCdF","0015g00000XyZ","Stone","Bob","Mr.","bob@example.com","true",'
        '"false","",""\n'
        '"0035g00000AbCdG","0015g00000XyZ","Dee","Cy","","cy@example.com","false","false",'
        '"550 5.1.1 User unknown","2024-03-01T10:00:00.000Z"\n'
        '"0035g00000AbCdH","0015g00000XyZ","Eff","Dee","","dee@example.com","false","true",'
        '"",""\n'
    )
    contacts, rejected, export = read(write(tmp_path, "sf.csv", text))
    assert export.summary.mapping == "salesforce"
    assert flags(contacts) == {
        "ann@example.com": (False, False, False, True),
        "bob@example.com": (True, False, False, False),
        "cy@example.com": (False, False, True, False),
        "dee@example.com": (False, False, True, False),
    }
    assert contacts[0]["name"] == "Ann Lee"
    assert rejected == []


def test_salesforce_report_export(tmp_path: Path) -> None:
    text = (
        '"Contact ID","First Name","Last Name","Account Name","Email","Email Opt Out",'
        '"Email Bounced Reason","Contact Owner"\n'
        '"003A","Ann","Lee","Acme","ann@example.com","0","","Sam"\n'
        '"003B","Bob","Stone","Acme","bob@example.com","1","","Sam"\n'
    )
    contacts, _, export = read(write(tmp_path, "report.csv", text))
    assert export.summary.mapping == "salesforce"
    assert flags(contacts) == {
        "ann@example.com": (False, False, False, True),
        "bob@example.com": (True, False, False, False),
    }


def test_hubspot_export(tmp_path: Path) -> None:
    text = (
        "Record ID,First Name,Last Name,Email,Marketing contact status,"
        "Unsubscribed from all email,Email hard bounce reason,Lifecycle Stage\n"
        "101,Ann,Lee,ann@example.com,Marketing contact,false,,Lead\n"
        "102,Bob,Stone,bob@example.com,Non-marketing contact,true,,Customer\n"
        "103,Cy,Dee,cy@example.com,Marketing contact,,Unknown user,Lead\n"
        "104,Dee,Eff,dee@example.com,Non-marketing contact,,,Lead\n"
    )
    contacts, _, export = read(write(tmp_path, "hubspot-crm-exports-all-contacts.csv", text))
    assert export.summary.mapping == "hubspot"
    # Non-marketing is a billing status, not consent: dee stays mailable.
    assert flags(contacts) == {
        "ann@example.com": (False, False, False, True),
        "bob@example.com": (False, True, False, False),
        "cy@example.com": (False, False, True, False),
        "dee@example.com": (False, False, False, True),
    }


def test_hubspot_unsubscribes_and_bounces_export(tmp_path: Path) -> None:
    text = (
        "Email,Portal Bounce,Portal Unsubscribe,Portal Spam Report,Global Bounce,"
        "Marketing Information\n"
        "ann@example.com,,TRUE,,,\n"
        "bob@example.com,Mailbox does not exist,,,,\n"
        "cy@example.com,,,TRUE,,\n"
        "dee@example.com,FALSE,FALSE,FALSE,FALSE,TRUE\n"
    )
    contacts, _, export = read(write(tmp_path, "unsubscribes.csv", text))
    assert export.summary.mapping == "hubspot"
    assert flags(contacts) == {
        "ann@example.com": (False, True, False, False),
        "bob@example.com": (False, False, True, False),
        "cy@example.com": (True, False, False, False),
        "dee@example.com": (False, False, False, True),
    }


def test_dynamics_excel_export(tmp_path: Path) -> None:
    path = make_workbook(
        tmp_path / "Active Contacts 2024-05-01.xlsx",
        [
            [
                "(Do Not Modify) Contact",
                "(Do Not Modify) Row Checksum",
                "(Do Not Modify) Modified On",
                "Full Name",
                "Email",
                "Company Name",
                "Do not allow Emails",
                "Do not allow Bulk Emails",
            ],
            ["c1", "x", "2024-01-01", "Ann Lee", "ann@example.com", "Acme", "Allow", "Allow"],
            ["c2", "x", "2024-01-01", "Bob Stone", "bob@example.com", "Acme", "Do Not Allow", ""],
            ["c3", "x", "2024-01-01", "Cy Dee", "cy@example.com", "Acme", "Allow", "Do Not Allow"],
        ],
    )
    contacts, _, export = read(path)
    assert export.summary.mapping == "dynamics365"
    assert brief(contacts)[0] == (2, "ann@example.com", "Ann Lee")
    assert flags(contacts) == {
        "ann@example.com": (False, False, False, True),
        "bob@example.com": (True, False, False, False),
        "cy@example.com": (False, True, False, False),
    }


def test_dynamics_logical_names(tmp_path: Path) -> None:
    text = (
        "contactid,fullname,emailaddress1,donotemail,donotbulkemail\n"
        "c1,Ann Lee,ann@example.com,False,True\n"
        "c2,,bob@example.com,1,0\n"
    )
    contacts, _, export = read(write(tmp_path, "contacts.csv", text))
    assert export.summary.mapping == "dynamics365"
    assert brief(contacts) == [(2, "ann@example.com", "Ann Lee"), (3, "bob@example.com", None)]
    assert flags(contacts) == {
        "ann@example.com": (False, True, False, False),
        "bob@example.com": (True, False, False, False),
    }


def test_auto_prefers_salesforce_on_a_bare_header_and_falls_back_to_generic(
    tmp_path: Path,
) -> None:
    _, _, bare = read(write(tmp_path, "bare.csv", "Email,First Name,Last Name\na@b.co,A,B\n"))
    assert bare.summary.mapping == "salesforce"
    text = "E-mail;Display Name;Unsubscribed;Bounce Reason\na@b.co;A;Unsubscribed;\n"
    contacts, _, generic = read(write(tmp_path, "plain.csv", text))
    assert generic.summary.mapping == "generic"
    assert flags(contacts) == {"a@b.co": (False, True, False, False)}


def test_explicit_builtin_mapping_and_missing_flag_columns_warn(tmp_path: Path) -> None:
    contacts, _, export = read(write(tmp_path, "h.csv", "Email,First Name\na@b.co,A\n"), "hubspot")
    assert export.summary.mapping == "hubspot"
    assert contacts[0]["mailable"] is True
    assert export.summary.warnings == [
        "no do_not_email column in the header (looked for ['Portal Spam Report', "
        "'Global Spam Report'])",
        "no unsubscribed column in the header (looked for ['Unsubscribed from all email', "
        "'Opted out of all email', 'hs_email_optout', 'Portal Unsubscribe', "
        "'Global Unsubscribe'])",
        "no hard_bounced column in the header (looked for ['Email hard bounce reason', "
        "'hs_email_hard_bounce_reason_enum', 'Email Hard Bounce Reason Enum', "
        "'Portal Bounce', 'Global Bounce', 'Email Address Quarantined', "
        "'hs_email_quarantined'])",
    ]


def test_builtin_mappings_load() -> None:
    for name in ("salesforce", "hubspot", "dynamics365", "generic"):
        mapping = load_mapping(name)
        assert mapping.name == name
        assert mapping.source == f"built-in:{name}"
        assert mapping.email


# -- custom mappings -----------------------------------------------------------------------


def test_custom_yaml_mapping(tmp_path: Path) -> None:
    mapping_path = write(tmp_path, "acme.yaml", ACME_YAML)
    text = (
        "Contact,Mail Address,No Mail,Newsletter,Bounce Date,Opt-out: Invoices,"
        "Opt-out: Orders,Opt-out: Billing\n"
        "Ann Lee,ann@example.com,no,Subscribed,,Y,,yes\n"
        "Bob Stone,bob@example.com,YES,Opted out,,,1,\n"
        ",cy@example.com,,,,,,\n"
        "Dee Eff,dee@example.com,true,,2024-01-02,,,\n"
        "Eve Gee,eve@example.com,,,n/a,,,\n"
    )
    contacts, rejected, export = read(write(tmp_path, "acme.csv", text), mapping_path)
    assert export.summary.mapping == "acme"
    assert [(c["email"], c["opted_out_category_ids"]) for c in contacts] == [
        ("ann@example.com", ("NTC-1234-5678",)),
        ("bob@example.com", ("NTC-2222-3333",)),
        ("eve@example.com", ()),
    ]
    # "n/a" is not a bounce date; "Subscribed" is a default false value.
    assert flags(contacts) == {
        "ann@example.com": (False, False, False, True),
        "bob@example.com": (True, True, False, False),
        "eve@example.com": (False, False, False, True),
    }
    # "true" is not among this mapping's true values: fail closed, the row is rejected.
    assert reasons(rejected) == [
        (4, "missing field: name"),
        (
            5,
            "unreadable flag: column 'No Mail' (do_not_email) holds 'true', neither a true "
            "value (1, y, yes) nor a false value (0, allow, f, false, n, no, off, opted in, ...) "
            "of mapping 'acme'",
        ),
    ]


def test_mapping_from_dict_accepts_real_booleans() -> None:
    mapping = mapping_from_dict(
        {
            "columns": {"email": "E"},
            "flags": {"do_not_email": [{"column": "D", "true_values": [True, 1]}]},
        },
        source="run config",
    )
    assert mapping.do_not_email[0].true_values == frozenset({"true", "1"})
    assert mapping.source == "run config"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colums: {email: E}\n", "acme.yaml: colums: unknown key (allowed: category_opt_outs, "),
        (
            "columns: {name: N}\n",
            "acme.yaml: columns.email: required",
        ),
        ("columns: {email: E, phone: P}\n", "acme.yaml: columns.phone: unknown key"),
        ("columns: {email: [E, '']}\n", "acme.yaml: columns.email: '' is not a column name"),
        (
            "columns: {email: E}\ncategory_opt_outs:\n  - {column: X, category: NTC-12}\n",
            "acme.yaml: category_opt_outs[0].category: 'NTC-12' is not a category id "
            "(NTC-####-####)",
        ),
        (
            "columns: {email: E}\ncategory_opt_outs:\n  - {column: X}\n",
            "acme.yaml: category_opt_outs[0].category: required",
        ),
        ("columns: {email: E}\nflags: {bounced: [B]}\n", "acme.yaml: flags.bounced: unknown key"),
        (
            "columns: {email: E}\nflags:\n  hard_bounced:\n    - {column: B, when: always}\n",
            "acme.yaml: flags.hard_bounced[0].when: 'always' is not allowed (allowed: "
            "'true_values' or 'nonempty')",
        ),
        (
            "columns: {email: E}\nflags:\n  unsubscribed:\n    - {colum: B}\n",
            "acme.yaml: flags.unsubscribed[0].colum: unknown key",
        ),
        (
            "columns: {email: E}\nrequired: [phone]\n",
            "acme.yaml: required[0]: 'phone' is not allowed (allowed: 'email' or 'name')",
        ),
        (
            "columns: {email: E}\nrequired: [name]\n",
            "acme.yaml: required: 'name' is required but no name column is mapped",
        ),
        ("columns: {email: E}\ntrue_values: []\n", "acme.yaml: true_values: must list at least"),
        ("columns: {email: E}\nfalse_values: []\n", "acme.yaml: false_values: must list at least"),
        (
            "columns: {email: E}\ntrue_values: [Yes, '1']\nfalse_values: [no, YES]\n",
            "acme.yaml: false_values: 'yes' is listed both as a true and as a false value",
        ),
        (
            "columns: {email: E}\nflags:\n  hard_bounced:\n"
            "    - {column: B, when: nonempty, true_values: [x]}\n",
            "acme.yaml: flags.hard_bounced[0].true_values: not used with 'when: nonempty'",
        ),
        (
            "columns: {email: E}\nflags:\n  unsubscribed:\n"
            "    - {column: U, true_values: [out], false_values: [OUT]}\n",
            "acme.yaml: flags.unsubscribed[0].false_values: 'out' is listed both as a true and",
        ),
        (
            "columns: {email: E}\nflags:\n  do_not_email: {column: D, colour: red}\n",
            "acme.yaml: flags.do_not_email[0].colour: unknown key (allowed: column, false_values, "
            "true_values, when)",
        ),
        ("- just a list\n", "acme.yaml: a mapping must be a YAML mapping of keys"),
        ("columns: {email: [E\n", "acme.yaml: not valid YAML"),
    ],
)
def test_invalid_mappings(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "acme.yaml", text)
    with pytest.raises(CrmMappingError) as caught:
        load_mapping(path)
    assert str(caught.value).startswith(f"{tmp_path}/{message}")
    assert isinstance(caught.value, ConnectorError)


def test_unknown_mapping_name() -> None:
    with pytest.raises(CrmMappingError, match="unknown mapping 'zoho': use one of salesforce, "):
        load_mapping("zoho")
