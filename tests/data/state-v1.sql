-- A state database as the first version of feedpub made it: one issue half sent, one never queued.
CREATE TABLE issues (
	id INTEGER NOT NULL, 
	digest VARCHAR(100) NOT NULL, 
	slug VARCHAR(100) NOT NULL, 
	list VARCHAR(100) NOT NULL, 
	window_end DATETIME NOT NULL, 
	subject TEXT NOT NULL, 
	preheader TEXT NOT NULL, 
	html TEXT NOT NULL, 
	text TEXT NOT NULL, 
	articles TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (digest, window_end), 
	UNIQUE (digest, slug)
);
CREATE TABLE subscribers (
	id INTEGER NOT NULL, 
	email VARCHAR(320) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	source VARCHAR(100) NOT NULL, 
	created_at DATETIME NOT NULL, 
	confirmed_at DATETIME, 
	unsubscribed_at DATETIME, 
	bounced_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (email)
);
CREATE TABLE subscriptions (
	subscriber_id INTEGER NOT NULL, 
	list VARCHAR(100) NOT NULL, 
	PRIMARY KEY (subscriber_id, list), 
	FOREIGN KEY(subscriber_id) REFERENCES subscribers (id) ON DELETE CASCADE
);
CREATE TABLE deliveries (
	id INTEGER NOT NULL, 
	issue_id INTEGER NOT NULL, 
	subscriber_id INTEGER NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_attempt_at DATETIME, 
	last_reply TEXT, 
	sent_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (issue_id, subscriber_id), 
	FOREIGN KEY(issue_id) REFERENCES issues (id), 
	FOREIGN KEY(subscriber_id) REFERENCES subscribers (id) ON DELETE CASCADE
);
CREATE INDEX ix_deliveries_status ON deliveries (status);
CREATE INDEX ix_deliveries_issue_id ON deliveries (issue_id);
INSERT INTO subscribers (id, email, name, status, source, created_at, confirmed_at) VALUES
  (1, 'a@example.net', 'A', 'active', 'test', '2026-11-01 10:00:00', '2026-11-01 10:00:00'),
  (2, 'b@example.net', 'B', 'active', 'test', '2026-11-01 10:00:00', '2026-11-01 10:00:00');
INSERT INTO subscriptions (subscriber_id, list) VALUES (1, 'weekly'), (2, 'weekly');
INSERT INTO issues (id, digest, slug, list, window_end, subject, preheader, html, text, articles, created_at) VALUES
  (1, 'weekly', '2026-11-23', 'weekly', '2026-11-23 08:00:00', 'Half sent', '', '<p>One</p>', 'One', '[]',
   '2026-11-23 08:00:00'),
  (2, 'weekly', '2026-11-30', 'weekly', '2026-11-30 08:00:00', 'Never queued', '', '<p>Two</p>', 'Two', '[]',
   '2026-11-30 08:00:00');
INSERT INTO deliveries (id, issue_id, subscriber_id, status, attempts, sent_at) VALUES
  (1, 1, 1, 'sent', 1, '2026-11-23 08:00:05'),
  (2, 1, 2, 'pending', 0, NULL);
