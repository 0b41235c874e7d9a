DROP TABLE clerk_budget;
