DROP TABLE clerk_instance;
