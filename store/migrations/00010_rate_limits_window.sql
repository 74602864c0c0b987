-- Each hit also deletes the windows more than a day old: by window_start,
-- which the primary key (bucket first) does not serve, so without this
-- index every hit read the whole table.

-- +goose Up
CREATE INDEX rate_limits_window ON rate_limits (window_start);

-- +goose Down
DROP INDEX rate_limits_window;
