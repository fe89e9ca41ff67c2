-- Pilot groups: a task released "in via sperimentale" (task.yaml `pilota: GROUP`) is open to the members of
-- its group only. Members are codici fiscali, kept here (personal data stays out of the rule pack).
CREATE TABLE pilot_members (
    gruppo TEXT NOT NULL,
    cf TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (gruppo, cf)
);
