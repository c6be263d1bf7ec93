-- Opt-outs per category: how many (non-deleted) contacts opted out and their share of all
-- non-deleted contacts. Rebuilt as a whole after each sync.
create table if not exists opt_outs_by_category (
    category_id text not null primary key, -- Category (categories.id, or one only the opt-outs still name)
    category_name text, -- Category name; for a category the API no longer returns, the name recorded with the opt-outs
    category_status text, -- Published, Unpublished, New or Deleted; null when the API no longer returns it
    opt_out_allowed boolean, -- Whether contacts may opt out of this category
    opted_out_contacts bigint, -- Non-deleted contacts that opted out of the category
    contacts bigint, -- All non-deleted contacts (the denominator of the share)
    opt_out_share double precision -- opted_out_contacts / contacts; null when there are no contacts
);
